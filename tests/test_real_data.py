"""The real upstream files in ../shared/data load with the expected shapes (skipped when absent)."""

from __future__ import annotations

from collections import Counter

import pytest

from biasshift.benchmarks.crows_pairs import CrowsPairs
from biasshift.benchmarks.discrim_eval_gen import DiscrimEvalGen
from biasshift.benchmarks.dt_stereotyping import DTStereotyping
from biasshift.benchmarks.worldbench import WorldBench
from biasshift.data import resolve
from conftest import REAL_DATA


def load_real(cls):
    files = {}
    for f in cls.data_files:
        if not (REAL_DATA / f.rel).is_file():
            pytest.skip(f"real data file {f.rel} not staged in {REAL_DATA}")
        rf = resolve(f, REAL_DATA, download=False)
        assert rf.verified, f"{f.rel}: sha256 differs from the pinned upstream checksum"
        files[f.rel] = rf.path
    b = cls()
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
