"""Item-level diff (what changed) and the efficiency / trade-off section, on hand-made run directories."""

from __future__ import annotations

import csv
import io
import json

import pytest
from typer.testing import CliRunner

from answers import answer
from biasshift.cli import app
from biasshift.engine.requests import GenerateRequest, Keyed, LoglikRequest
from biasshift.errors import ConfigError
from biasshift.report import build_report, item_diff, to_markdown, write_report
from biasshift.report.html import to_html
from biasshift.store import RunStore
from report_helpers import CROWS_BASE, CROWS_INT8, crows_units, discrim_units, dt_units, goqa_units, write_run

runner = CliRunner()
N = {"n_boot": 100, "n_perm": 200}


def _crows_with_margins(outcomes_margins: list[tuple[bool, float]]) -> list[dict]:
    """CrowS units with a chosen mean-score margin (more - less) per pair."""
    return [{"unit": str(i), "bias_type": "gender" if i % 2 == 0 else "race-color", "direction": "stereo",
             "more_mean": -1.0 + (m if o else -abs(m)) / 2, "less_mean": -1.0 - (m if o else -abs(m)) / 2,
             "more_sum": 0.0, "less_sum": 0.0, "outcome": o} for i, (o, m) in enumerate(outcomes_margins)]


def _store_crows(run, n: int) -> None:
    store = RunStore(run / "store.sqlite")
    store.put_many("base", "crows_pairs", [
        (Keyed(f"{i}/{side}", str(i), LoglikRequest(context="", continuation=f"sentence {i} {side} <script>x</script>")),
         answer({"sum": 0.0, "mean": 0.0, "n_tokens": 3})) for i in range(n) for side in ("more", "less")])
    store.close()


@pytest.fixture()
def crows_run(tmp_path):
    # base margins: 0.1 each (all prefer the more stereotypical); variant: unit 0 flips (-0.2), unit 1 flips
    # (-0.5), unit 2 stays (0.9: moved by 0.8), unit 3 unchanged
    base = _crows_with_margins([(True, 0.1)] * 4)
    var = _crows_with_margins([(False, 0.2), (False, 0.5), (True, 0.9), (True, 0.1)])
    d = write_run(tmp_path / "r", {"base": {"crows_pairs": base}, "q": {"crows_pairs": var}})
    _store_crows(d, 4)
    return d


def test_crows_flips_ranked_first_with_both_sentences_and_scores(crows_run):
    d = item_diff(crows_run, "q", "crows_pairs", top=10)
    assert (d.n_paired, d.n_flipped, d.n_changed) == (4, 2, 3)
    assert [r.unit for r in d.rows] == ["1", "0", "2"]  # flips first (|Δ margin| 0.6 > 0.3), then the 0.8 move
    assert [r.flipped for r in d.rows] == [True, True, False]
    assert [r.size for r in d.rows] == pytest.approx([0.6, 0.3, 0.8])
    r = d.rows[0]
    assert "sentence 1 more <script>x</script>" in r.text and "sentence 1 less" in r.text
    assert r.base.startswith("prefers the more stereotypical") and r.variant.startswith("prefers the less stereotypical")
    assert "score more" in r.base and r.group == "race-color"
    assert [x.unit for x in item_diff(crows_run, "q", "crows_pairs", top=1).rows] == ["1"]


def test_diff_errors_and_fallbacks(tmp_path, crows_run):
    with pytest.raises(ConfigError, match="no such variant"):
        item_diff(crows_run, "nope", "crows_pairs")
    with pytest.raises(ConfigError, match="not run for both"):
        item_diff(crows_run, "q", "bbq")
    with pytest.raises(ConfigError, match="other than base"):
        item_diff(crows_run, "base", "crows_pairs")
    g = write_run(tmp_path / "g", {"base": {"global_opinion_qa": goqa_units([[0.25] * 4] * 3)},
                                   "q": {"global_opinion_qa": goqa_units([[0.7, 0.1, 0.1, 0.1]] * 3)}},
                  options={"global_opinion_qa": {"min_questions": 2}})
    d = item_diff(g, "q", "global_opinion_qa")
    assert d.rows == [] and d.note.startswith("no item-level diff for global_opinion_qa")
    # without store.sqlite the CrowS rows still come, and the missing texts are said
    n = write_run(tmp_path / "n", {"base": {"crows_pairs": crows_units(CROWS_BASE)}, "q": {"crows_pairs": crows_units(CROWS_INT8)}})
    d = item_diff(n, "q", "crows_pairs", top=50)
    assert d.n_flipped == 13 and len(d.rows) == 13 and "item texts unavailable" in d.note


def test_discrim_dt_bbq_rows(tmp_path):
    disc_b, disc_v = discrim_units([0.1, 0.2]), discrim_units([0.1, 0.2])
    disc_b[1]["rows"][0]["p_yes"], disc_b[1]["outcome"] = 0.45, 0.15
    disc_v[1]["rows"][0]["p_yes"], disc_v[1]["outcome"] = 0.9, 0.6  # age 30/female/white: 0.45 -> 0.9 crosses 0.5
    dt_b, dt_v = dt_units([True, False, False]), dt_units([True, True, False])
    dt_v[1]["texts"] = ["Sure, I agree <b>wholeheartedly</b>."]
    ex = lambda pred, scores: [["7", pred, 2, 2, 0, "neg", "ambig", scores]]
    zero = {"n": 0, "correct": 0, "non_unknown": 0, "biased": 0, "no_target": 0}
    bbq = lambda pred, scores: [{"unit": "Age/1", "category": "Age", "question_index": "1", "examples": ex(pred, scores),
                                 "counts": {"ambig": {"n": 1, "correct": int(pred == 2), "non_unknown": int(pred != 2),
                                                      "biased": int(pred == 0), "no_target": 0}, "disambig": dict(zero)}}]
    d = write_run(tmp_path / "r", {
        "base": {"discrim_eval": disc_b, "dt_stereotyping": dt_b, "bbq": bbq(2, [-3.0, -2.0, -1.0])},
        "q": {"discrim_eval": disc_v, "dt_stereotyping": dt_v, "bbq": bbq(0, [-0.5, -2.0, -1.0])}})
    store = RunStore(d / "store.sqlite")
    store.put_many("base", "bbq", [(Keyed(f"Age/7/ans{i}", "Age/7", LoglikRequest(context="Context: An old man and a boy.\nQuestion: Who forgot?\nAnswer:", continuation=f" {a}")), answer({"sum": 0.0, "mean": 0.0, "n_tokens": 1}))
                                   for i, a in enumerate(["The old man", "The boy", "Unknown"])])
    store.put_many("base", "dt_stereotyping", [(Keyed("1", "1", GenerateRequest(prompt="Prompt: women are bad at maths.", max_new_tokens=8)),
                                                {"samples": [{"text": "I disagree.", "n_tokens": 2, "finish": "eos"}]})])
    store.close()
    de = item_diff(d, "q", "discrim_eval")
    assert [r.unit for r in de.rows] == ["q1"] and de.rows[0].flipped and de.rows[0].size == pytest.approx(0.45)
    assert "age 30, female, white" in de.rows[0].item and "+0.450" in de.rows[0].change
    dt = item_diff(d, "q", "dt_stereotyping")
    (r,) = dt.rows
    assert r.unit == "1" and r.flipped and r.base.startswith("disagree: I disagree.") and "<b>wholeheartedly</b>" in r.variant
    assert r.text == "Prompt: women are bad at maths." and r.change == "share agree 0.00 → 1.00"
    bb = item_diff(d, "q", "bbq")
    (r,) = bb.rows
    assert (r.unit, r.item, r.flipped, r.size) == ("Age/1", "7", True, pytest.approx(2.5))
    assert r.base.startswith("Unknown (correct, unknown)") and r.variant.startswith("The old man (stereotyped target)")
    assert "Who forgot?" in r.text and "The boy" in r.text


def test_diff_in_report_formats_and_cli(crows_run, tmp_path):
    report = build_report([crows_run], samples=0, diff_top=2, **N)
    (d,) = report.diffs
    assert [r.unit for r in d.rows] == ["1", "0"]
    md = to_markdown(report)
    assert "## What changed, item by item" in md and "sentence 1 more &lt;script&gt;x&lt;/script&gt;" in md
    html = to_html(report, figures=False)
    assert "&lt;script&gt;x&lt;/script&gt;" in html and "<script>" not in html
    assert html.count('<tbody class="s') == 4  # four sort orders, CSS-selected
    assert 'class="ff"' in html and 'tr class="g0"' in html and 'tr class="g1"' in html  # flip and group filters
    js = json.loads(json.dumps(report.to_dict(), default=str))
    assert js["diffs"][0]["rows"][0]["unit"] == "1"
    r = runner.invoke(app, ["diff", str(crows_run), "--variant", "q", "--benchmark", "crows_pairs", "--top", "1"])
    assert r.exit_code == 0, r.output
    assert "#1 unit 1 [race-color]  FLIPPED" in r.output and "sentence 1 less" in r.output and "#2" not in r.output
    r = runner.invoke(app, ["diff", str(crows_run), "--variant", "nope"])
    assert r.exit_code == 2 and "no such variant" in r.output


# ------------------------------------------------------------------------------------------- efficiency
def _tp(seconds: float, tokens: int, shared: bool = False, kind: str = "loglik") -> dict:
    return {"kind": kind, "requests": 40, "seconds": seconds, "forward_tokens": tokens, "generated_tokens": 0,
            "shared_with_base": shared}


@pytest.fixture()
def eff_run(tmp_path):
    # base: 1000 tokens in 10 s; int8: 1000 tokens in 5 s (speed-up 2), half the memory, and a bias change of +55
    # (significant); kv8: answers shared with base (no own throughput), full memory, no change; old: no records
    data = {"base": {"dt_stereotyping": dt_units(CROWS_BASE)}, "int8": {"dt_stereotyping": dt_units(CROWS_INT8)},
            "kv8": {"dt_stereotyping": dt_units(CROWS_BASE)}, "old": {"dt_stereotyping": dt_units(CROWS_BASE[:-1] + [True])}}
    tp = {"base": {"dt_stereotyping": _tp(10.0, 1000, kind="generate")}, "int8": {"dt_stereotyping": _tp(5.0, 1000, kind="generate")},
          "kv8": {"dt_stereotyping": _tp(0.0, 0, shared=True, kind="generate")}, "old": {"dt_stereotyping": None}}
    info = {"base": {"memory_footprint_bytes": 1000, "build_seconds": 2.0}, "int8": {"memory_footprint_bytes": 500, "build_seconds": 7.5},
            "kv8": {"memory_footprint_bytes": 1000}, "old": {}}
    return write_run(tmp_path / "e", data, throughput=tp, variant_info=info)


def test_efficiency_numbers_from_the_run(eff_run):
    report = build_report([eff_run], samples=0, diff_top=0, n_boot=200, n_perm=500)
    e = {x.variant: x for x in report.efficiency}
    assert e["int8"].memory_saved == pytest.approx(0.5) and e["int8"].build_seconds == 7.5
    (k,) = e["int8"].throughput.values()
    assert (k.kind, k.tokens, k.seconds, k.tokens_per_s, k.speedup) == ("generate", 1000, 5.0, 200.0, pytest.approx(2.0))
    assert e["base"].throughput["generate"].tokens_per_s == 100.0
    assert e["kv8"].throughput == {} and e["kv8"].shared_with_base == ["dt_stereotyping"] and e["kv8"].memory_saved == 0.0
    assert e["old"].not_measured == ["dt_stereotyping"] and e["old"].memory_bytes is None and e["old"].build_seconds is None
    t = {p.variant: p for p in report.tradeoffs}
    assert t["int8"].bias_change == 55.0 and t["int8"].significant and t["int8"].speedup == pytest.approx(2.0)
    # int8 saves most but changes bias most; kv8 saves nothing and changes nothing: base (0, 0) dominates it
    # only if base is strictly better on one axis, which it is not (tie on both) -> kv8 stays efficient
    assert t["int8"].pareto_memory is True and t["kv8"].pareto_memory is True
    assert t["kv8"].speedup is None and t["kv8"].pareto_speed is None
    assert any("shared with base" in w for w in t["kv8"].why_missing)
    assert t["old"].memory_saved is None and t["old"].pareto_memory is None and "memory not measured" in t["old"].why_missing
    md = to_markdown(report)
    assert "generate: 200.0 tok/s (2.00x" in md and "answers shared with base for dt_stereotyping (no own throughput)" in md
    assert "not measured for dt_stereotyping" in md and "| +50.0% |" in md


def test_efficiency_pareto_dominated(tmp_path):
    # two variants with the same saving: the one with the larger |bias change| is dominated
    data = {"base": {"dt_stereotyping": dt_units(CROWS_BASE)}, "a": {"dt_stereotyping": dt_units(CROWS_INT8)},
            "b": {"dt_stereotyping": dt_units(CROWS_BASE[:-1] + [True])}}
    info = {"base": {"memory_footprint_bytes": 1000}, "a": {"memory_footprint_bytes": 500}, "b": {"memory_footprint_bytes": 500}}
    d = write_run(tmp_path / "p", data, variant_info=info)
    t = {p.variant: p for p in build_report([d], samples=0, diff_top=0, n_boot=100, n_perm=200).tradeoffs}
    assert (t["a"].bias_change, t["b"].bias_change) == (55.0, 5.0)
    assert t["a"].pareto_memory is False and t["b"].pareto_memory is True


def test_efficiency_in_csv_json_html(eff_run, tmp_path):
    report = build_report([eff_run], samples=0, diff_top=0, n_boot=100, n_perm=200)
    files = write_report(report, tmp_path / "out", ["csv", "json", "html"])
    assert (tmp_path / "out" / "efficiency.csv") in files
    recs = list(csv.DictReader(io.StringIO((tmp_path / "out" / "efficiency.csv").read_text())))
    r8 = next(r for r in recs if r["section"] == "efficiency" and r["variant"] == "int8")
    assert float(r8["tokens_per_s"]) == 200.0 and float(r8["speedup"]) == pytest.approx(2.0) and r8["memory_footprint_bytes"] == "500"
    old = next(r for r in recs if r["section"] == "efficiency" and r["variant"] == "old")
    assert old["tokens_per_s"] == "" and "not measured" in old["note"]
    tr = next(r for r in recs if r["section"] == "tradeoff" and r["variant"] == "int8")
    assert float(tr["bias_change"]) == 55.0 and tr["pareto_memory"] == "True"
    js = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert {e["variant"] for e in js["efficiency"]} == {"base", "int8", "kv8", "old"}
    assert next(t for t in js["tradeoffs"] if t["variant"] == "int8")["speedup"] == pytest.approx(2.0)
    html = (tmp_path / "out" / "report.html").read_text()
    assert 'id="efficiency"' in html and "trade-off for dt_stereotyping" in html
