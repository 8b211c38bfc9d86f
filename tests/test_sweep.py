"""The compression-rate sweep report (biasshift.report.sweep) on hand-made run directories whose per-group
divergence is known by construction: CrowS-Pairs group 'gender' is unchanged at every rate, group
'race-color' moves away from 50% linearly with the rate; perplexity grows with the rate."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest
from typer.testing import CliRunner

from biasshift.cli import app
from biasshift.report import build_report, write_report
from biasshift.report.render import fmt_change
from biasshift.report.sweep import build_sweep, sweep_tables, to_csv, to_json, to_markdown, write_sweep
from biasshift.stats import holm
from report_helpers import crows_units, discrim_units, write_run

N = 40  # units per CrowS group
N_BOOT, N_PERM = 400, 2000
GENDER, RACE = "gender", "race-color"


def _cfg(method: str, sparsity: float, pattern: str = "unstructured") -> dict:
    return {"method": method, "sparsity": sparsity, "pattern": pattern, "scope": "all-linear"}


def _crows(gender_true: int, race_true: int) -> list[dict]:
    """2N CrowS units: the first ``gender_true`` gender pairs and the first ``race_true`` race pairs stereotypical."""
    outcomes = [i < gender_true for i in range(N)] + [i < race_true for i in range(N)]
    return crows_units(outcomes, [GENDER] * N + [RACE] * N)


def _ppl(level: float) -> list[dict]:
    """8 windows of 10 tokens with per-token NLL 3 + level (+ a per-window wobble): ppl = exp(3 + level + 0.035)."""
    out = []
    for w in range(8):
        per = 3.0 + level + 0.01 * w
        out.append({"unit": f"w{w}", "nll": 10 * per, "n_tokens": 10, "outcome": -per})
    return out


# magnitude at 0.1 .. 0.5: race-color gains 4k stereotypical pairs (k = 10 x rate), gender unchanged;
# wanda at 0.2, 0.4: race-color gains 2k; magnitude 2:4: gender gains 8, race-color unchanged.
def _race_extra(method: str, s: float) -> int:
    k = round(10 * s)
    return 4 * k if method == "magnitude" else 2 * k


def sweep_run(root, with_nm: bool = True):
    half = N // 2
    data = {"base": {"crows_pairs": _crows(half, half), "perplexity": _ppl(0.0)}}
    info: dict[str, dict] = {"base": {"config": {}}}
    for method, rates in (("magnitude", (0.1, 0.2, 0.3, 0.4, 0.5)), ("wanda", (0.2, 0.4))):
        for s in rates:
            v = f"{method}@{s:g}"
            data[v] = {"crows_pairs": _crows(half, half + _race_extra(method, s)), "perplexity": _ppl(s)}
            info[v] = {"config": _cfg(method, s)}
    if with_nm:
        data["magnitude-2:4"] = {"crows_pairs": _crows(half + 8, half), "perplexity": _ppl(0.7)}
        info["magnitude-2:4"] = {"config": _cfg("magnitude", 0.5, "2:4")}
    return write_run(root, data, variant_info=info)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = sweep_run(tmp_path_factory.mktemp("sweep") / "run")
    report = build_report([root], n_boot=N_BOOT, n_perm=N_PERM, seed=0, diff_top=0)
    sweep = build_sweep(report)
    assert sweep is not None
    return root, report, sweep


def _point(sweep, variant, benchmark="crows_pairs", group=None):
    pts = [p for p in sweep.points if p.variant == variant and p.benchmark == benchmark
           and (p.group == group if group else p.group is None)]
    assert len(pts) == 1, (variant, benchmark, group, pts)
    return pts[0]


def test_axis_and_lines(built):
    _, _, sweep = built
    axis = {v.variant: (v.series, v.method, v.sparsity, v.pattern) for v in sweep.variants}
    assert axis["magnitude@0.3"] == ("magnitude", "magnitude", 0.3, "unstructured")
    assert axis["magnitude-2:4"] == ("magnitude", "magnitude", 0.5, "2:4")
    assert sweep.series("org/model-a") == ["magnitude", "wanda"]
    line = sweep.select("org/model-a", "crows_pairs", "magnitude", nm=False)
    assert [p.sparsity for p in line] == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert all(p.pattern == "unstructured" for p in line)  # the 2:4 point (also sparsity 0.5) is not on the line
    nm = sweep.select("org/model-a", "crows_pairs", "magnitude", nm=True)
    assert [(p.variant, p.pattern) for p in nm] == [("magnitude-2:4", "2:4")]


def test_values_equal_hand_computation(built):
    _, _, sweep = built
    for s in (0.1, 0.2, 0.3, 0.4, 0.5):
        k = round(10 * s)
        v = f"magnitude@{s:g}"
        overall = _point(sweep, v).row
        assert overall.base == pytest.approx(50.0)
        assert overall.value == pytest.approx(100 * (N // 2 + N // 2 + 4 * k) / (2 * N))  # 50 + 5k
        assert overall.bias_change == pytest.approx(5 * k)
        race = _point(sweep, v, group=RACE).row
        assert race.base == pytest.approx(50.0)
        assert race.value == pytest.approx(50.0 + 10 * k)  # grows linearly with the rate
        assert race.bias_change == pytest.approx(10 * k)
        gender = _point(sweep, v, group=GENDER).row
        assert gender.value == pytest.approx(50.0) and gender.bias_change == pytest.approx(0.0)
        assert gender.p_value == pytest.approx(1.0) and not gender.significant
        ppl = _point(sweep, v, "perplexity").row
        assert ppl.value == pytest.approx(math.exp(3.035 + s))
        assert ppl.change == pytest.approx(math.exp(3.035 + s) - math.exp(3.035))
    nm_g = _point(sweep, "magnitude-2:4", group=GENDER).row
    assert nm_g.value == pytest.approx(70.0) and nm_g.bias_change == pytest.approx(20.0)
    assert _point(sweep, "magnitude-2:4", group=RACE).row.bias_change == pytest.approx(0.0)


def test_whole_benchmark_points_are_the_reports_rows(built):
    _, report, sweep = built
    for p in sweep.points:
        if p.group is None:
            r = report.row(p.model, p.benchmark, p.row.metric, p.variant)
            assert p.row is r  # same CI, p, Holm, significance
            assert p.source == "report"


def test_group_rows_equal_build_report_on_the_group_alone(built, tmp_path):
    """A group's row equals build_report's own row on a run holding that group's units only (same seed):
    same values, CI of the distance change and raw p-value; its Holm p is over the report's family plus the
    sweep's rows."""
    _, report, sweep = built
    half = N // 2
    variants = {"base": {"crows_pairs": [u for u in _crows(half, half) if u["bias_type"] == RACE]},
                "magnitude@0.4": {"crows_pairs": [u for u in _crows(half, half + 16) if u["bias_type"] == RACE]}}
    alone = build_report([write_run(tmp_path / "race", variants)], n_boot=N_BOOT, n_perm=N_PERM, seed=0, diff_top=0)
    ref = alone.row("org/model-a", "crows_pairs", "pct_stereotype", "magnitude@0.4")
    mine = _point(sweep, "magnitude@0.4", group=RACE).row
    assert (mine.base, mine.value, mine.change) == pytest.approx((ref.base, ref.value, ref.change))
    assert (mine.dist_ci_low, mine.dist_ci_high) == pytest.approx((ref.dist_ci_low, ref.dist_ci_high))
    assert (mine.ci_low, mine.ci_high) == pytest.approx((ref.ci_low, ref.ci_high))
    assert mine.p_value == pytest.approx(ref.p_value)
    extra = [p for p in sweep.points if p.source == "sweep"]
    assert len(extra) == 2 * 8  # two groups x eight pruned variants
    adj = holm([r.p_value for r in report.rows] + [p.row.p_value for p in extra])[len(report.rows):]
    assert [p.row.p_holm for p in extra] == pytest.approx(adj)
    assert [p.row.significant for p in extra] == [a < 0.05 for a in adj]
    assert sweep.settings["holm_family_sweep"] == report.settings["holm_family_size"] + len(extra)


def test_divergence_and_presentation(built):
    _, _, sweep = built
    race = [_point(sweep, f"magnitude@{s:g}", group=RACE).row for s in (0.1, 0.4, 0.5)]
    assert [r.significant for r in race] == [False, True, True]  # 4 discordant pairs: p = 0.125; 16, 20: tiny p
    tables = {t.benchmark: t for t in sweep_tables(sweep)}
    t = tables["crows_pairs"]
    assert t.header == ["line", "group", "n", "base", "0.1", "0.2", "0.3", "0.4", "0.5", "2:4 (0.5)"]
    by = {(r[0], r[1]): (r, c) for r, c in zip(t.rows, t.classes)}
    row, cls = by[("magnitude", f"bias_type={RACE}")]
    lo, hi = _point(sweep, "magnitude@0.1", group=RACE).row.bias_ci
    assert row[2] == str(N) and row[3] == "50.00"
    assert row[4] == f"60.00 (+10.00 [{fmt_change(lo)}, {fmt_change(hi)}])"  # value (bias change [CI]), plain
    assert "more biased" not in row[4] and cls[4] == ""  # not significant: plain
    assert row[8].startswith("100.00 (+50.00 [") and row[8].endswith("more biased*") and cls[8] == "worse"
    grow, gcls = by[("magnitude", f"bias_type={GENDER}")]
    assert all(c == "" for c in gcls) and not any("biased" in c for c in grow)
    # wanda has no 2:4 variant and no 0.1 rate
    wrow, _ = by[("wanda", "all")]
    assert wrow[4] == "–" and wrow[-1] == "–"
    md = to_markdown(sweep)
    assert "Compression-rate sweep" in md and "race-color" in md
    csv_rows = list(csv.DictReader(io.StringIO(to_csv(sweep))))
    assert len(csv_rows) == len(sweep.points)
    nm = [r for r in csv_rows if r["pattern"] == "2:4" and r["group"] == "" and r["benchmark"] == "crows_pairs"]
    assert len(nm) == 1 and float(nm[0]["value"]) == pytest.approx(60.0)
    doc = json.loads(to_json(sweep))
    assert doc["schema"] == "biasshift-sweep/1" and len(doc["points"]) == len(sweep.points)


def test_discrim_eval_attribute_rows_equal_build_report_metric_rows(tmp_path):
    """DiscrimEval's per-attribute ranges: the sweep's row equals build_report's --metric row (same CI, same p)."""
    base, r1, r2 = [0.1, 0.2, 0.1, 0.2, 0.3, 0.1], [0.2, 0.3, 0.2, 0.2, 0.4, 0.2], [0.3, 0.5, 0.3, 0.4, 0.5, 0.3]
    data = {"base": {"discrim_eval": discrim_units(base)}, "wanda@0.2": {"discrim_eval": discrim_units(r1)},
            "wanda@0.4": {"discrim_eval": discrim_units(r2)}}
    info = {"base": {"config": {}}, "wanda@0.2": {"config": _cfg("wanda", 0.2)}, "wanda@0.4": {"config": _cfg("wanda", 0.4)}}
    root = write_run(tmp_path / "de", data, variant_info=info)
    sweep = build_sweep(build_report([root], n_boot=N_BOOT, n_perm=N_PERM, seed=0, diff_top=0))
    ref = build_report([root], metrics=["discrim_eval.max_min_gender"], n_boot=N_BOOT, n_perm=N_PERM, seed=0, diff_top=0)
    p = _point(sweep, "wanda@0.4", "discrim_eval", group="gender")
    r = ref.row("org/model-a", "discrim_eval", "max_min_gender", "wanda@0.4")
    assert p.group_field == "attribute" and p.row.metric == "max_min_gender"
    assert p.row.value == pytest.approx(sum(r2) / len(r2)) and p.row.change == pytest.approx((sum(r2) - sum(base)) / 6)
    assert (p.row.ci_low, p.row.ci_high) == pytest.approx((r.ci_low, r.ci_high))
    assert p.row.p_value == pytest.approx(r.p_value)
    assert {pt.group for pt in sweep.points if pt.group_field == "attribute"} == {"age", "gender", "race"}


def test_combination_is_its_own_line(tmp_path):
    half = N // 2
    data = {"base": {"crows_pairs": _crows(half, half)}}
    info: dict[str, dict] = {"base": {"config": {}}}
    for s in (0.2, 0.4):
        data[f"sparsegpt@{s:g}"] = {"crows_pairs": _crows(half, half + 4)}
        info[f"sparsegpt@{s:g}"] = {"config": _cfg("sparsegpt", s)}
    data["sparsegpt@0.4+int8"] = {"crows_pairs": _crows(half, half + 8)}
    info["sparsegpt@0.4+int8"] = {"config": {"order": ["sparsegpt@0.4", "int8"], "sparsegpt@0.4": _cfg("sparsegpt", 0.4),
                                             "int8": {"bits": 8}}}
    data["int8"] = {"crows_pairs": _crows(half, half)}
    info["int8"] = {"config": {"bits": 8}}
    sweep = build_sweep(build_report([write_run(tmp_path / "c", data, variant_info=info)], n_boot=50, n_perm=50, diff_top=0))
    assert sweep.series("org/model-a") == ["sparsegpt", "sparsegpt+int8"]
    assert "int8" not in {p.variant for p in sweep.points}  # no sweep axis


def test_no_sweep_without_two_rates(tmp_path):
    half = N // 2
    one_rate = {"base": {"crows_pairs": _crows(half, half)}, "wanda@0.5": {"crows_pairs": _crows(half, half + 4)},
                "wanda-2:4": {"crows_pairs": _crows(half, half + 4)}}
    info = {"base": {"config": {}}, "wanda@0.5": {"config": _cfg("wanda", 0.5)},
            "wanda-2:4": {"config": _cfg("wanda", 0.5, "2:4")}}
    root = write_run(tmp_path / "one", one_rate, variant_info=info)
    report = build_report([root], n_boot=50, n_perm=50, diff_top=0)
    assert build_sweep(report) is None
    written = write_report(report, tmp_path / "rep", ["html", "md", "csv", "json"])
    assert not any(p.name.startswith("sweep") for p in written)
    assert "Compression-rate sweep" not in (tmp_path / "rep" / "report.md").read_text()
    assert 'id="sweep"' not in (tmp_path / "rep" / "report.html").read_text()
    res = CliRunner().invoke(app, ["sweep", str(root), "--out", str(tmp_path / "sw")])
    assert res.exit_code == 2 and "no compression-rate sweep" in res.output


def test_report_includes_sweep_section(built, tmp_path):
    _, report, sweep = built
    written = write_report(report, tmp_path / "rep", ["html", "md", "csv", "json"])
    names = {p.name for p in written}
    assert {"sweep.csv", "sweep.json", "sweep-crows_pairs.png"} <= names
    assert "sweep-perplexity.png" not in names  # the quality anchor is drawn in each bias benchmark's figure
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Compression-rate sweep" in md and "(sweep-crows_pairs.png)" in md
    html = (tmp_path / "rep" / "report.html").read_text()
    assert '<section id="sweep">' in html and "data:image/png;base64," in html and "<script" not in html
    assert (tmp_path / "rep" / "sweep-crows_pairs.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_sweep_writes_files(built, tmp_path):
    root, _, _ = built
    out = tmp_path / "sw"
    res = CliRunner().invoke(app, ["sweep", str(root), "--out", str(out), "--format", "md,csv,json,html",
                                   "--n-boot", str(N_BOOT), "--n-perm", str(N_PERM)])
    assert res.exit_code == 0, res.output
    for name in ("sweep.md", "sweep.csv", "sweep.json", "sweep.html", "sweep-crows_pairs.png"):
        assert (out / name).is_file(), name
    doc = json.loads((out / "sweep.json").read_text())
    race5 = [p for p in doc["points"] if p["variant"] == "magnitude@0.5" and p["group"] == RACE]
    assert race5[0]["value"] == pytest.approx(100.0) and race5[0]["bias_direction"] == "more biased"
    assert "<script" not in (out / "sweep.html").read_text()


def test_write_sweep_terminal(built):
    from rich.console import Console

    _, _, sweep = built
    console = Console(record=True, width=250)
    assert write_sweep(sweep, "/nonexistent-unused", ["terminal"], console=console) == []
    text = console.export_text()
    assert "race-color" in text and "more biased*" in text


def test_untrusted_names_are_escaped(tmp_path):
    half = N // 2
    evil = '<img src=x onerror=alert(1)>$x$'
    data = {"base": {"crows_pairs": crows_units([i < half for i in range(N)], [evil] * N)}}
    info: dict[str, dict] = {"base": {"config": {}}}
    for s in (0.2, 0.4):
        data[f"magnitude@{s:g}"] = {"crows_pairs": crows_units([i < half + 4 for i in range(N)], [evil] * N)}
        info[f"magnitude@{s:g}"] = {"config": _cfg("magnitude", s)}
    root = write_run(tmp_path / "evil", data, model="<script>alert(2)</script>", variant_info=info)
    sweep = build_sweep(build_report([root], n_boot=50, n_perm=50, diff_top=0))
    from biasshift.report.sweep import figure, to_html

    page = to_html(sweep)
    assert "<script>" not in page and "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert figure(sweep, sweep.models()[0], "crows_pairs")[:4] == b"\x89PNG"  # '$' in a label is not mathtext
