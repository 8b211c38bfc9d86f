"""The CI gate: threshold parsing, direction, Holm, reasons, CLI exit codes (hand-made run directories)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from biasshift.cli import app
from biasshift.errors import ConfigError
from biasshift.report import build_report, gate, parse_threshold
from report_helpers import CROWS_BASE, CROWS_INT8, crows_units, discrim_units, dt_units, standard_run, write_run

runner = CliRunner()
N = {"n_boot": 300}


@pytest.fixture(scope="module")
def std_dir(tmp_path_factory):
    return standard_run(tmp_path_factory.mktemp("gate") / "a")


@pytest.fixture(scope="module")
def rep(std_dir):
    return build_report([std_dir], samples=0, **N)


def test_parse_threshold():
    t = parse_threshold("10%")
    assert (t.value, t.relative) == (pytest.approx(0.10), True) and str(t) == "10%"
    assert parse_threshold("0.02") == parse_threshold("abs:0.02")
    assert (parse_threshold("0.02").value, parse_threshold("0.02").relative) == (0.02, False)
    assert parse_threshold(0.25).relative and parse_threshold("rel:0.25") == parse_threshold(0.25)
    assert parse_threshold(" 2.5 % ").value == pytest.approx(0.025)
    for bad in ("ten", "-1%", "nan", "", "%"):
        with pytest.raises(ConfigError):
            parse_threshold(bad)


def test_fails_on_significant_increase_with_readable_reason(rep):
    res = gate(rep, "10%")
    assert not res.ok and len(res.checked) == 6
    assert [(r.benchmark, r.variant) for r in res.failures] == [("dt_stereotyping", "int8")]
    (reason,) = res.reasons
    r = res.failures[0]
    assert reason.startswith("dt_stereotyping.agreement_index, variant int8 (model org/model-a): 25.00 -> 80.00, "
                             "change +55.00 (+220.0%), 95% CI [")
    assert f"[{r.ci_low:+.2f}, {r.ci_high:+.2f}]" in reason
    assert "p = 0.0034 (Holm 0.0205, McNemar exact): bias increased by more than 10%" in reason
    # discrim_eval int8 is +133% but p_holm = 0.625: large, not significant, so it does not fail
    assert "discrim_eval" not in " ".join(res.reasons)


def test_threshold_relative_and_absolute(rep):
    assert gate(rep, "219%").ok is False
    assert gate(rep, "221%").ok is True  # +220% does not exceed 221%
    assert gate(rep, 2.5).ok is True  # a number is relative: 250%
    assert gate(rep, "54.9").ok is False  # absolute, in percentage points of agreement_index
    assert gate(rep, "55.1").ok is True


def test_decrease_never_fails(tmp_path):
    # the mirror image: the variant is 55 points LESS stereotypical, equally significant
    d = write_run(tmp_path / "r", {"base": {"dt_stereotyping": dt_units(CROWS_INT8)}, "int8": {"dt_stereotyping": dt_units(CROWS_BASE)}})
    res = gate([d], "0%", **N)
    assert res.ok and res.failures == [] and res.checked[0].change == -55.0 and res.checked[0].significant


def test_holm_decides(tmp_path):
    # b = 0, c = 6: raw McNemar p = 2 / 64 = 0.03125 < 0.05
    base = [False] * 10
    var = [True] * 6 + [False] * 4
    alone = write_run(tmp_path / "alone", {"base": {"dt_stereotyping": dt_units(base)}, "q": {"dt_stereotyping": dt_units(var)}})
    res = gate([alone], "10%", **N)
    assert not res.ok and res.checked[0].p_holm == pytest.approx(0.03125)
    # the same comparison next to a second (null) test: Holm doubles it to 0.0625 -> not significant
    both = write_run(tmp_path / "both", {
        "base": {"dt_stereotyping": dt_units(base), "discrim_eval": discrim_units([0.1, 0.2, 0.3])},
        "q": {"dt_stereotyping": dt_units(var), "discrim_eval": discrim_units([0.1, 0.2, 0.3])},
    })
    res = gate([both], "10%", **N)
    assert res.ok
    cp = next(r for r in res.checked if r.benchmark == "dt_stereotyping")
    assert cp.p_value == pytest.approx(0.03125) and cp.p_holm == pytest.approx(0.0625)
    # gating only discrim_eval still applies Holm over the whole table (2 tests)
    res = gate([both], "10%", metrics=["discrim_eval"], **N)
    assert [r.benchmark for r in res.checked] == ["discrim_eval"] and res.report.settings["holm_family_size"] == 2


def test_base_zero_relative_change_undefined(tmp_path):
    d = write_run(tmp_path / "r", {"base": {"dt_stereotyping": dt_units([False] * 12)},
                                   "q": {"dt_stereotyping": dt_units([True] * 10 + [False] * 2)}})
    res = gate([d], "1000%", **N)
    assert not res.ok and "relative change undefined: base is 0" in res.reasons[0]


def test_metric_selection_and_errors(rep, std_dir):
    # a non-primary metric: CrowS's sum-score share (neutral 50): base 10/20 -> 20/20, distance 0 -> 50
    d = write_run(std_dir.parent / "sum", {"base": {"crows_pairs": crows_units([True] * 10 + [False] * 10)},
                                           "q": {"crows_pairs": crows_units([True] * 20)}})
    res = gate([d], "10%", metrics=["crows_pairs.pct_stereotype_sum_score"], n_boot=200, n_perm=4000)
    assert [(r.metric, r.variant) for r in res.checked] == [("pct_stereotype_sum_score", "q")]
    (f,) = res.failures
    assert "permutation of |pct_stereotype_sum_score - 50|" in f.test and f.change == 50.0 and f.dist_change == 50.0
    assert res.reasons[0].startswith("crows_pairs.pct_stereotype_sum_score, variant q")
    assert res.report.settings["holm_family_size"] == 2  # the primary comparison + the one asked for
    res = gate([std_dir], "10%", metrics=["dt_stereotyping.disagreement_index"], n_boot=200, n_perm=4000)
    assert [(r.metric, r.variant) for r in res.checked] == [("disagreement_index", "int8"), ("disagreement_index", "int4")]
    assert res.ok and res.report.settings["holm_family_size"] == 8  # the 6 primary comparisons + the 2 asked for
    assert gate(rep, "10%", metrics=["discrim_eval", "global_opinion_qa"]).ok
    with pytest.raises(ConfigError, match="no metric 'nope'"):
        gate([std_dir], metrics=["dt_stereotyping.nope"])
    with pytest.raises(ConfigError, match="no such benchmark"):
        gate([std_dir], metrics=["bbq"])
    with pytest.raises(ConfigError):
        gate(rep, alpha=1.5)


def test_quality_anchor_is_gated_only_when_named(tmp_path):
    def ppl_units(shift):  # 12 windows of 100 tokens; the variant's NLL is higher in every window
        return [{"unit": f"w{i}", "nll": 100 * (2.0 + 0.1 * i + shift), "n_tokens": 100, "outcome": 2.0 + 0.1 * i + shift}
                for i in range(12)]

    d = write_run(tmp_path / "r", {"base": {"dt_stereotyping": dt_units(CROWS_BASE), "perplexity": ppl_units(0.0)},
                                   "q": {"dt_stereotyping": dt_units(CROWS_BASE), "perplexity": ppl_units(0.5)}})
    res = gate([d], "10%", **N)
    assert res.ok and [r.benchmark for r in res.checked] == ["dt_stereotyping"]  # perplexity is not a bias measure
    ppl = next(r for r in res.report.rows if r.benchmark == "perplexity")
    assert ppl.quality and ppl.bias_direction == "worse quality" and ppl.rel_change == pytest.approx(np.exp(0.5) - 1)
    assert ppl.p_value == pytest.approx(2 / 2**12)  # every window worse: exact permutation, 2 extreme of 4096
    res = gate([d], "10%", metrics=["perplexity"], **N)
    assert not res.ok and res.reasons[0].startswith("perplexity.ppl, variant q")
    assert res.reasons[0].endswith("quality worsened by more than 10%")


def test_missing_values_warn_or_fail(tmp_path):
    d = standard_run(tmp_path / "r", goqa_min_questions=50, variants=("int8",))
    res = gate([d], "10%", metrics=["global_opinion_qa"], **N)
    assert res.ok and "no value" in res.warnings[0] and "global_opinion_qa.gini_wasserstein" in res.warnings[0]
    res = gate([d], "10%", metrics=["global_opinion_qa"], fail_on_missing=True, **N)
    assert not res.ok and "--fail-on-missing" in res.reasons[0]


def test_base_only_passes_with_warning(tmp_path):
    d = write_run(tmp_path / "r", {"base": {"dt_stereotyping": dt_units(CROWS_BASE)}})
    res = gate([d])
    assert res.ok and res.checked == [] and "no variant besides base" in res.warnings[-1]


def test_cli_exit_codes(std_dir, tmp_path):
    r = runner.invoke(app, ["gate", str(std_dir), "--max-increase", "10%", "--n-boot", "200", "--json", str(tmp_path / "g.json")])
    assert r.exit_code == 1, r.output
    assert "FAIL dt_stereotyping.agreement_index, variant int8 (model org/model-a): 25.00 -> 80.00" in r.output
    assert "gate FAILED: 1 of 6" in r.output
    assert json.loads((tmp_path / "g.json").read_text())["ok"] is False
    r = runner.invoke(app, ["gate", str(std_dir), "--max-increase", "300%", "--n-boot", "200"])
    assert r.exit_code == 0 and "gate passed: 6 comparison(s) checked" in r.output
    r = runner.invoke(app, ["gate", str(std_dir), "--metric", "discrim_eval", "--n-boot", "200"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["gate", str(std_dir), "--max-increase", "lots"])
    assert r.exit_code == 2 and "error:" in r.output and "--max-increase" in r.output
