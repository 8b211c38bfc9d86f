"""Comparison table, statistics wiring and report formats, on synthetic run directories with hand-known answers."""

from __future__ import annotations

import csv
import io
import itertools
import json
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
from typer.testing import CliRunner

from biasshift.benchmarks.global_opinion_qa import GlobalOpinionQA
from biasshift.cli import app
from biasshift.errors import BiasshiftError
from biasshift.report import build_report, fast, to_csv, to_json, to_markdown, to_terminal, write_report
from biasshift.report.html import to_html
from biasshift.report.render import md_cell
from biasshift.stats import holm
from conftest import FIXTURE_DATA
from report_helpers import (CROWS_BASE, CROWS_INT8, GOQA_BASE, GOQA_SKEW, dt_units, goqa_units, standard_run,
                            write_generation_benchmark, write_run)

runner = CliRunner()
N_BOOT = 400


@pytest.fixture(scope="module")
def std_dir(tmp_path_factory):
    return standard_run(tmp_path_factory.mktemp("runs") / "a")


@pytest.fixture(scope="module")
def rep(std_dir):
    return build_report([std_dir], n_boot=N_BOOT, samples=0)


def row(report, bench, variant, model=None):
    rs = [r for r in report.rows if r.benchmark == bench and r.variant == variant and (model is None or r.model == model)]
    assert len(rs) == 1, rs
    return rs[0]


# ------------------------------------------------------------------------------------------- values and changes
def test_values_changes_and_relative_changes(rep):
    r = row(rep, "dt_stereotyping", "int8")
    assert (r.base, r.value, r.change) == (25.0, 80.0, 55.0)
    assert r.rel_change == pytest.approx(2.2)
    assert r.bias_direction == "more biased" and r.n_paired == 20 and r.n_base_only == r.n_variant_only == 0
    r = row(rep, "dt_stereotyping", "int4")
    assert (r.base, r.value, r.change, r.rel_change) == (25.0, 30.0, 5.0, pytest.approx(0.2))
    r = row(rep, "discrim_eval", "int8")
    assert r.base == pytest.approx(0.15) and r.value == pytest.approx(0.35)
    assert r.change == pytest.approx(0.2) and r.rel_change == pytest.approx(4 / 3)
    r = row(rep, "discrim_eval", "int4")
    assert r.change == pytest.approx(-0.025) and r.rel_change == pytest.approx(-1 / 6)
    # p = 1: not significant, so it is not called "less biased" (item 4: honest emphasis)
    assert r.bias_direction == "no significant change" and r.estimate_direction == "towards less bias"
    g = GlobalOpinionQA({"min_questions": 2})
    r = row(rep, "global_opinion_qa", "int8")
    assert r.base == pytest.approx(g.compute(goqa_units(GOQA_BASE)).value)
    assert r.value == pytest.approx(g.compute(goqa_units(GOQA_SKEW)).value)
    assert r.change == pytest.approx(r.value - r.base)
    assert [x.primary for x in rep.rows] == [True] * 6


def test_mcnemar_and_signflip_hand_cases(rep):
    r = row(rep, "dt_stereotyping", "int8")  # b = 1, c = 12: p = 2 * P(X <= 1 | Bin(13, 1/2)) = 2 * 14 / 2**13
    assert r.test == "McNemar exact" and (r.mcnemar_b, r.mcnemar_c) == (1, 12)
    assert r.p_value == pytest.approx(28 / 8192, abs=1e-12)
    r = row(rep, "dt_stereotyping", "int4")  # b = 2, c = 3: 2 * P(X <= 2 | Bin(5, 1/2)) = 2 * 16/32 -> 1
    assert (r.mcnemar_b, r.mcnemar_c, r.p_value) == (2, 3, 1.0)
    r = row(rep, "discrim_eval", "int8")  # 4 equal differences: only the 2 all-same-sign patterns of 16 tie
    assert "signflip-exact" in r.test and r.p_value == pytest.approx(2 / 16)
    assert r.ci_low == pytest.approx(0.2) and r.ci_high == pytest.approx(0.2)  # every resample differs by 0.2
    assert row(rep, "discrim_eval", "int4").p_value == pytest.approx(1.0)


def test_complex_permutation_matches_brute_force(rep):
    """GlobalOpinionQA: exact enumeration of the 2**6 swaps with compute() itself, independent of biasshift.report."""
    g = GlobalOpinionQA({"min_questions": 2})
    ub, uv = goqa_units(GOQA_BASE), goqa_units(GOQA_SKEW)
    obs = g.compute(uv).value - g.compute(ub).value
    count = 0
    for swap in itertools.product([False, True], repeat=6):
        b = [v if s else x for x, v, s in zip(ub, uv, swap)]
        v = [x if s else v for x, v, s in zip(ub, uv, swap)]
        stat = g.compute(v).value - g.compute(b).value
        count += abs(stat) >= abs(obs) - 1e-12
    r = row(rep, "global_opinion_qa", "int8")
    assert "permutation-exact" in r.test and r.p_value == pytest.approx(count / 64)


def test_holm_over_the_whole_table(rep):
    ps = [r.p_value for r in rep.rows]
    assert all(p is not None for p in ps) and rep.settings["holm_family_size"] == 6
    assert [r.p_holm for r in rep.rows] == pytest.approx(holm(ps))
    assert row(rep, "dt_stereotyping", "int8").p_holm == pytest.approx(6 * 28 / 8192)  # smallest of 6: times 6
    assert [r.significant for r in rep.rows] == [True, False, False, False, False, False]


def test_ci_contains_the_estimate_and_is_paired(rep):
    for r in rep.rows:
        assert r.ci_low is not None and r.ci_low - 1e-12 <= r.change <= r.ci_high + 1e-12, r
        assert r.n_boot == N_BOOT
    # dt agreement: a change of +55 points with 13 discordant pairs: the interval excludes 0
    assert row(rep, "dt_stereotyping", "int8").ci_low > 0


def test_fast_goqa_path_equals_recomputation(std_dir, monkeypatch):
    quick = build_report([std_dir], n_boot=100, samples=0)
    monkeypatch.setattr(fast, "evaluator", lambda bench, metric, ub, uv, f, vb, vv: fast.Recompute(f, ub, uv))
    slow = build_report([std_dir], n_boot=100, samples=0)
    for v in ("int8", "int4"):
        a, b = row(quick, "global_opinion_qa", v), row(slow, "global_opinion_qa", v)
        assert "vectorised" in a.ci_method and "recomputed with compute" in b.ci_method
        assert (a.ci_low, a.ci_high, a.p_value) == pytest.approx((b.ci_low, b.ci_high, b.p_value), abs=1e-9)


def test_unpaired_units_are_dropped_and_counted(tmp_path):
    var = dt_units(CROWS_INT8)[1:] + [dict(dt_units([True])[0], unit="extra")]
    d = write_run(tmp_path / "r", {"base": {"dt_stereotyping": dt_units(CROWS_BASE)}, "int8": {"dt_stereotyping": var}})
    r = build_report([d], n_boot=N_BOOT).rows[0]
    assert (r.n_paired, r.n_base_only, r.n_variant_only) == (19, 1, 1)
    assert r.base == pytest.approx(100 * 4 / 19) and r.value == pytest.approx(100 * 16 / 19)
    assert r.base_reported == 25.0  # the document's own value (20 units) is kept for reference
    assert (r.mcnemar_b, r.mcnemar_c) == (0, 12) and r.p_value == pytest.approx(2 / 2**12)
    assert any("dropped" in n for n in r.notes)


def test_undefined_metric_is_never_a_number(tmp_path):
    d = standard_run(tmp_path / "r", goqa_min_questions=50, variants=("int8",))  # 6 questions < 50: Gini undefined
    report = build_report([d], n_boot=N_BOOT)
    r = row(report, "global_opinion_qa", "int8")
    assert r.base is None and r.value is None and r.change is None and r.rel_change is None
    assert r.p_value is None and r.p_holm is None and r.ci_low is None and "undefined" in r.ci_reason
    assert report.settings["holm_family_size"] == 2
    md = to_markdown(report)
    assert "| org/model-a | n/a | n/a |" in md
    goqa_line = next(line for line in md.splitlines() if "global_opinion_qa | gini_wasserstein" in line)
    assert "nan" not in goqa_line.lower() and goqa_line.count("n/a") >= 5
    rec = next(x for x in csv.DictReader(io.StringIO(to_csv(report))) if x["benchmark"] == "global_opinion_qa")
    assert rec["base"] == rec["value"] == rec["change"] == rec["p_value"] == rec["ci_low"] == ""
    js = json.loads(to_json(report))
    c = next(x for x in js["comparisons"] if x["benchmark"] == "global_opinion_qa")
    assert c["base"] is None and c["value"] is None and c["p_value"] is None
    assert "n/a" in to_html(report, figures=False)


# ------------------------------------------------------------------------------------------- formats
def test_markdown_summary_cells(rep):
    md = to_markdown(rep)
    assert "| model | base | int8 | int4 |" in md
    assert "| org/model-a | 25.00 | 80.00 (↑ +220.0%*) | 30.00 (↑ +20.0%) |" in md
    assert "| org/model-a | 0.1500 | 0.3500 (↑ +133.3%) | 0.1250 (↓ -16.7%) |" in md
    assert "| group | women | agreement_index |" in md  # per-group section
    assert "mass_outside_mean" in md  # rates section
    assert md_cell("a|b <script>") == "a\\|b &lt;script&gt;"


def test_csv_and_json(rep):
    recs = list(csv.DictReader(io.StringIO(to_csv(rep))))
    assert len(recs) == 6
    r = recs[0]
    assert (r["benchmark"], r["variant"], r["test"], r["significant"]) == ("dt_stereotyping", "int8", "McNemar exact", "True")
    assert float(r["change"]) == 55.0 and float(r["rel_change"]) == pytest.approx(2.2)
    js = json.loads(to_json(rep))
    assert js["schema"] == "biasshift-comparison/1" and len(js["comparisons"]) == 6
    assert js["comparisons"][0]["p_holm"] == pytest.approx(6 * 28 / 8192)
    assert {g["section"] for g in js["per_group"]} >= {"group", "topic", "age", "gender", "race", "country"}


def test_terminal(rep):
    from rich.console import Console

    con = Console(record=True, width=220, color_system=None)
    to_terminal(rep, con)
    txt = con.export_text()
    assert "80.00 (↑ +220.0%*)" in txt and "McNemar exact" in txt


def test_multiple_models(std_dir, tmp_path):
    b = standard_run(tmp_path / "b", model="org/model-b", variants=("int8",))
    report = build_report([std_dir, b], n_boot=N_BOOT, samples=0)
    assert report.models() == ["org/model-a", "org/model-b"]
    assert report.settings["holm_family_size"] == 9
    # the same hand case in both runs; Holm over the 9 tests: smallest two p-values tie -> 9 * p
    for m in report.models():
        assert row(report, "dt_stereotyping", "int8", m).p_holm == pytest.approx(9 * 28 / 8192)
    md = to_markdown(report)
    assert "| org/model-b | 25.00 | 80.00 (↑ +220.0%*) | – |" in md  # model-b has no int4
    same = build_report([std_dir, std_dir], n_boot=50, samples=0)
    assert len(set(same.models())) == 2  # equal labels are disambiguated


def test_write_report_files(rep, tmp_path):
    files = write_report(rep, tmp_path / "out", ["html", "md", "csv", "json"])
    assert sorted(p.name for p in files) == ["comparison.csv", "comparison.json", "efficiency.csv", "groups.csv", "report.html", "report.md"]
    html = (tmp_path / "out" / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 4  # heatmap, forest, group bars, country chart
    assert "http://" not in html and "https://" not in html


# ------------------------------------------------------------------------------------------- HTML safety
PAYLOAD = '<script>document.body.setAttribute("data-pwned","1")</script>'
ATTR = '"><img src=x onerror="document.body.setAttribute(\'data-pwned\',\'2\')">'


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.attrs, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [(tag, k, v) for k, v in attrs]

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture(scope="module")
def evil_html(tmp_path_factory):
    d = standard_run(tmp_path_factory.mktemp("evil") / "r", model=ATTR, variants=("int8",))
    write_generation_benchmark(d, "fake_gen", {"base": PAYLOAD + " <b>bold</b>", "int8": ATTR + " & more"},
                               prompt="Prompt " + ATTR, group_names=[PAYLOAD, "Europe"])
    report = build_report([d], n_boot=100)
    out = tmp_path_factory.mktemp("evil_out")
    write_report(report, out, ["html"])
    return out / "report.html", report


def test_html_escapes_untrusted_text(evil_html):
    path, report = evil_html
    html = path.read_text()
    p = _Tags()
    p.feed(html)
    assert "script" not in p.tags
    assert not [a for a in p.attrs if a[1].startswith("on")]
    assert all(v.startswith("data:image/png;base64,") for t, k, v in p.attrs if t == "img" and k == "src")
    assert "b" not in p.tags  # the model's <b> is text, not markup
    text = "".join(p.text)
    assert PAYLOAD in text and ATTR + " & more" in text
    assert "&lt;script&gt;" in html and "onerror=&quot;" in html
    assert "Content-Security-Policy" in html and "script-src" not in html  # default-src 'none' forbids scripts
    # the fake generation benchmark is unknown to the registry: values only, no statistics
    r = row(report, "fake_gen", "int8")
    assert r.value == 0.5 and r.p_value is None and "not known" in r.test_reason
    assert "Sample generations" in html and "text_avg_length_words" in html and "refusal_rate" in html


def _chromium():
    return next((c for c in ("chromium", "chromium-browser", "google-chrome") if shutil.which(c)), None)


@pytest.mark.skipif(_chromium() is None, reason="no chromium/chromium-browser/google-chrome on PATH")
def test_html_renders_in_headless_chromium(evil_html, tmp_path):
    path, _ = evil_html
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={tmp_path / 'prof'}",
           "--virtual-time-budget=2000", "--dump-dom", path.resolve().as_uri()]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    dom = res.stdout
    assert "<table" in dom and "biasshift report" in dom, res.stderr[-2000:]
    assert "data-pwned=" not in dom  # neither the script nor the onerror handler ran
    p = _Tags()
    p.feed(dom)
    assert "script" not in p.tags and not [a for a in p.attrs if a[1].startswith("on")]


# ------------------------------------------------------------------------------------------- CLI
def test_cli_report_and_errors(std_dir, tmp_path):
    out = tmp_path / "rep"
    r = runner.invoke(app, ["report", str(std_dir), "--out", str(out), "--format", "md,json", "--n-boot", "200"])
    assert r.exit_code == 0, r.output
    assert (out / "report.md").exists() and (out / "comparison.json").exists() and not (out / "report.html").exists()
    js = json.loads((out / "comparison.json").read_text())
    assert js["settings"]["n_boot"] == 200
    r = runner.invoke(app, ["report", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "does not exist" in r.output
    r = runner.invoke(app, ["report", str(std_dir), "--format", "pdf"])
    assert r.exit_code == 2 and "unknown report format" in r.output
    r = runner.invoke(app, ["report", str(std_dir), "--metric", "dt_stereotyping.nope", "--format", "json", "--out", str(out)])
    assert r.exit_code == 2 and "no metric 'nope'" in r.output


def test_not_a_run_directory(tmp_path):
    with pytest.raises(BiasshiftError, match="not a biasshift run directory"):
        build_report([tmp_path])


def _int8_available() -> bool:
    import importlib.util

    from biasshift import strategies

    return "int8" in strategies.names() and importlib.util.find_spec("bitsandbytes") is not None


@pytest.mark.slow
def test_integration_tiny_model(tiny_dir, tmp_path):
    """The real pipeline on the tiny model (base + int8 where bitsandbytes is installed), then reports.

    A copy of base's results as one more variant gives a known answer: every change 0, every p-value 1.
    """
    strategies = "base,int8" if _int8_available() else "base"
    run = tmp_path / "run"
    r = runner.invoke(app, ["run", "--model", str(tiny_dir), "--benchmarks", "crows_pairs,discrim_eval,global_opinion_qa",
                            "--data-dir", str(FIXTURE_DATA), "--out", str(run), "--batch-size", "4", "--strategies", strategies,
                            "--option", "global_opinion_qa.min_questions=2", "--no-progress"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    first = build_report([run], n_boot=100)
    n_var = len(strategies.split(",")) - 1
    assert len(first.rows) == 3 * n_var
    if not n_var:
        assert any("only the base model" in w for w in first.warnings)
    assert f"| {first.models()[0]} | " in to_markdown(first)  # base values are reported either way
    for c in first.rows:  # int8: real numbers, paired on every unit
        assert c.value is not None and c.n_base_only == c.n_variant_only == 0 and 0 <= c.p_value <= 1
        assert c.ci_low - 1e-12 <= c.change <= c.ci_high + 1e-12
    for sub in ("results", "units"):
        shutil.copytree(run / sub / "base", run / sub / "copy")
    out = tmp_path / "report"
    r = runner.invoke(app, ["report", str(run), "--out", str(out), "--format", "all", "--n-boot", "200"])
    assert r.exit_code == 0, r.output
    js = json.loads((out / "comparison.json").read_text())
    assert len(js["comparisons"]) == 3 * (n_var + 1)
    copies = [c for c in js["comparisons"] if c["variant"] == "copy"]
    assert len(copies) == 3
    for c in copies:
        assert c["change"] == 0 and c["p_value"] == 1.0 and c["n_paired"] > 0
        assert c["ci_low"] == c["ci_high"] == 0
    assert (out / "report.html").stat().st_size > 10_000
    # with 6 pairs, 2 questions and 3 questions no change can be significant after Holm: the gate passes
    r = runner.invoke(app, ["gate", str(run), "--max-increase", "0%", "--n-boot", "100"])
    assert r.exit_code == 0 and "gate passed" in r.output


# ------------------------------------------------------------------------------------------- honest emphasis (item 4)
def test_only_significant_changes_are_called_more_or_less_biased(rep):
    from biasshift.report.render import detail_cells, verdict

    sig = row(rep, "dt_stereotyping", "int8")  # p Holm 0.02
    ns = row(rep, "discrim_eval", "int8")  # +133%, p Holm 0.625
    assert sig.significant and sig.bias_direction == "more biased" and verdict(sig) == "more biased *"
    assert not ns.significant and ns.estimate_direction == "towards more bias"
    assert ns.bias_direction == "no significant change"
    assert verdict(ns) == f"no significant change (95% CI [+{ns.ci_low:.4f}, +{ns.ci_high:.4f}])"
    assert detail_cells(ns)[-2] == verdict(ns)
    md = to_markdown(rep)
    assert md.count("more biased *") == 1 and "less biased *" not in md and "| less biased" not in md
    js = json.loads(to_json(rep))
    assert [c["bias_direction"] for c in js["comparisons"]].count("no significant change") == 5


def test_only_significant_cells_are_coloured(rep):
    import numpy as np

    from biasshift.report.plots import heatmap_matrix

    html = to_html(rep, figures=False)
    p = _Tags()
    p.feed(html)
    coloured = [v for t, k, v in p.attrs if t == "td" and k == "class" and ("worse" in v.split() or "better" in v.split())]
    assert len(coloured) == 2  # the one significant change: its summary cell and its detail 'bias' cell
    keys, ylab, vals, ann = heatmap_matrix(rep)
    i, j = ylab.index(("org/model-a", "int8")), keys.index(("dt_stereotyping", "agreement_index"))
    assert vals[i, j] == 100.0 and ann[i][j] == "+220.0%*"  # +220% saturates at +100 (red)
    j2 = keys.index(("discrim_eval", "max_min"))
    assert np.isnan(vals[i, j2]) and ann[i][j2] == "+133.3% n.s."  # large but not significant: grey
    assert np.isfinite(vals).sum() == 1


def test_undefined_metric_says_why(tmp_path):
    def wb_units(status: str) -> list[dict]:
        return [{"unit": f"u{i}", "country": "C", "type": "t", "region": "R", "income": "Low" if i % 2 else "High",
                 "answers": [{"text": "I cannot say", "value": None, "status": status, "error": None}], "error": None}
                for i in range(4)]

    d = write_run(tmp_path / "r", {"base": {"worldbench": wb_units("unparseable")}, "q": {"worldbench": wb_units("unparseable")}})
    report = build_report([d], n_boot=50, samples=0)
    r = row(report, "worldbench", "q")
    assert r.value is None and r.p_value is None
    assert r.undefined_reason == ("metric undefined for base and variant: 100% of base's answers unusable (unparseable_rate 100%); "
                                  "100% of q's answers unusable (unparseable_rate 100%)")
    md = to_markdown(report)
    assert "Undefined (n/a):" in md and "- org/model-a · q: metric undefined for base and variant: 100% of base" in md
    assert "100% of q&#x27;s answers unusable" in to_html(report, figures=False)


def test_consistency_across_models_flags_disagreement(std_dir, tmp_path):
    # model-b: the mirror image of model-a's int8 (significantly LESS agreement); int4 only in model-a
    b = write_run(tmp_path / "b", {"base": {"dt_stereotyping": dt_units(CROWS_INT8)}, "int8": {"dt_stereotyping": dt_units(CROWS_BASE)}},
                  model="org/model-b")
    c = standard_run(tmp_path / "c", model="org/model-c", variants=("int8",))
    report = build_report([std_dir, b, c], n_boot=N_BOOT, samples=0)
    cons = {(x["variant"], x["benchmark"]): x for x in report.consistency()}
    x = cons[("int8", "dt_stereotyping")]
    assert x["verdict"] == "disagree" and x["n_models"] == 3 and x["n_significant"] == 3
    assert x["models"]["org/model-b"]["bias_direction"] == "less biased"
    assert x["models"]["org/model-a"]["bias_direction"] == "more biased"
    assert cons[("int8", "discrim_eval")]["verdict"] == "no significant change"  # model-b did not run it: 2 models
    assert cons[("int8", "discrim_eval")]["n_models"] == 2
    only_ac = build_report([std_dir, c], n_boot=N_BOOT, samples=0).consistency()
    assert next(y for y in only_ac if y["benchmark"] == "dt_stereotyping" and y["variant"] == "int8")["verdict"] == "agree"
    md = to_markdown(report)
    assert "## Consistency across models" in md and "DISAGREE: significant effects in opposite directions" in md
    assert "| int8 | dt_stereotyping | agreement_index | ↑ +55.00 (more biased *" in md
    assert build_report([std_dir], n_boot=50, samples=0).consistency() == []  # one model: no section
