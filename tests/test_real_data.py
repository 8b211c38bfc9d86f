"""The real upstream files in ../shared/data load with the expected shapes (skipped when absent)."""

from __future__ import annotations

from collections import Counter

import pytest

from biasshift.benchmarks.bbq import BBQ, CATEGORIES
from biasshift.benchmarks.bold import Bold
from biasshift.benchmarks.crows_pairs import CrowsPairs
from biasshift.benchmarks.dialect_ppl import DialectPPL
from biasshift.benchmarks.discrim_eval import DiscrimEval
from biasshift.benchmarks.perplexity import Perplexity
from biasshift.benchmarks.discrim_eval_gen import DiscrimEvalGen
from biasshift.benchmarks.dt_stereotyping import DTStereotyping
from biasshift.benchmarks.worldbench import WorldBench
from biasshift.data import resolve
from conftest import REAL_DATA


def load_real(cls, **opts):
    b = cls(opts)
    files = {}
    for f in b.files():
        if not (REAL_DATA / f.rel).is_file():
            pytest.skip(f"real data file {f.rel} not staged in {REAL_DATA}")
        rf = resolve(f, REAL_DATA, download=False)
        assert rf.verified, f"{f.rel}: sha256 differs from the pinned upstream checksum"
        files[f.rel] = rf.path
    return b, b.load(files)


def test_crows_pairs_real():
    _, items = load_real(CrowsPairs)
    assert len(items) == 1508
    assert Counter(it.fields["direction"] for it in items) == {"stereo": 1290, "antistereo": 218}
    bt = Counter(it.fields["bias_type"] for it in items)
    assert bt["race-color"] == 516 and bt["gender"] == 262 and bt["disability"] == 60 and len(bt) == 9


def test_dt_stereotyping_real():
    b, items = load_real(DTStereotyping)
    assert len(items) == 1152
    assert len({it.fields["topic"] for it in items}) == 16 and len({it.fields["group"] for it in items}) == 24
    assert "OpenAI" not in b.system_text("Muslims")


def test_discrim_eval_gen_real():
    _, items = load_real(DiscrimEvalGen)
    assert len(items) == 140 and len({it.unit for it in items}) == 70


def test_worldbench_real():
    _, items = load_real(WorldBench)
    assert len(items) == 2214
    assert len({it.fields["type"] for it in items}) == 11
    no_region = {it.fields["country"] for it in items if it.fields["region"] is None}
    # the aggregates (Africa Eastern and Southern + five "(IDA & IBRD countries)" regions) have no group
    assert "Africa Eastern and Southern" in no_region
    assert sum("IDA & IBRD" in c for c in no_region) == 5
    assert len(no_region) == 6
    regions = {it.fields["region"] for it in items if it.fields["region"]}
    incomes = {it.fields["income"] for it in items if it.fields["income"]}
    assert len(regions) == 7 and len(incomes) == 4
    assert not any("\\&" in r for r in regions)


def test_discrim_eval_real():
    b, items = load_real(DiscrimEval)
    assert len(items) == 9450
    units = Counter(it.unit for it in items)
    assert len(units) == 70 and set(units.values()) == {135}  # 70 questions x 135 demographic profiles
    ages = {it.fields["age"] for it in items}
    assert len(ages) == 9 and {it.fields["gender"] for it in items} == {"female", "male", "non-binary"}
    assert len({it.fields["race"] for it in items}) == 5


BBQ_COUNTS = {"Age": 3680, "Disability_status": 1556, "Gender_identity": 5672, "Nationality": 3080,
              "Physical_appearance": 1576, "Religion": 1200, "Sexual_orientation": 864, "Race_ethnicity": 6880,
              "Race_x_SES": 11160, "Race_x_gender": 15960, "SES": 6864}


@pytest.mark.parametrize("category", CATEGORIES)
def test_bbq_real(category):
    b, items = load_real(BBQ, categories=category)
    assert len(items) == BBQ_COUNTS[category]
    cond = Counter(it.fields["condition"] for it in items)
    assert cond["ambig"] == cond["disambig"] == len(items) // 2
    # the stereotyped target is found for nearly every example (the rest are counted, not guessed)
    assert sum(it.fields["target"] is None for it in items) < 0.05 * len(items)


def test_bold_real_all_prompts():
    b, items = load_real(Bold)
    assert len(items) == 23679 - 5  # the canonical release has 5 empty prompts: skipped and counted
    assert b.quirks == {"empty_prompts_skipped/political_ideology": 3, "empty_prompts_skipped/religious_ideology": 2}
    per = Counter(it.fields["domain"] for it in items)
    assert per == {"gender": 3204, "political_ideology": 1981, "profession": 10195, "race": 7657,
                   "religious_ideology": 637}
    assert len({(it.fields["domain"], it.fields["group"]) for it in items}) == 2 + 12 + 18 + 4 + 7


def test_dialect_pairs_real():
    b, items = load_real(DialectPPL, format="upstream")
    assert len(items) == 2019 and not b.quirks
    assert items[0].id == "L00001" and items[0].fields["aae"] and items[0].fields["sae"]


def test_perplexity_on_staged_plain_text():
    rel = "calibration/wikitext-2-raw-test.hf-rows-crlf.txt"
    if not (REAL_DATA / rel).is_file():
        pytest.skip(f"{rel} not staged")
    b = Perplexity({"text": rel})
    rf = resolve(b.files()[0], REAL_DATA, download=False)
    assert rf.checksum == "not pinned"
    items = b.load({rel: rf.path})
    text = items[0].fields["text"]
    assert "\r" not in text and text.count("\n") == 2891  # 2,891 CRLF-terminated rows, read as LF
