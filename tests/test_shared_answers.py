"""Answers a variant provably cannot change are taken from base, not recomputed (issue: no duplicate work).

kv4/kv8 without --quantize-prompt-cache never read a quantized cache on log-likelihood or choice requests,
so their answers to scoring benchmarks are the base variant's. The runner copies them; these tests prove the
copies equal a recomputation, that results say so, and that nothing else is shared.
"""

from __future__ import annotations

import importlib.util
import json
import sqlite3

import pytest

from biasshift.runner import RunConfig, Runner
from conftest import FIXTURE_DATA

pytestmark = pytest.mark.skipif(importlib.util.find_spec("hqq") is None, reason="hqq not installed")

SCORING = ["crows_pairs", "discrim_eval"]
OPTS = {"dt_stereotyping": {"max_new_tokens": "4"}}


def _run(tiny_dir, out, strategies, benches, share=True):
    cfg = RunConfig(model=str(tiny_dir), strategies=strategies, benchmarks=benches, out=out, data_dir=FIXTURE_DATA,
                    device="cpu", dtype="float32", batch_size=4, share_base_answers=share, limit=6,
                    options={k: v for k, v in OPTS.items() if k in benches})
    return Runner(cfg, progress=False).run()


def _answers(out, variant):
    with sqlite3.connect(out / "store.sqlite") as c:
        return {(b, k): (rq, rs) for b, k, rq, rs in c.execute(
            "SELECT benchmark, key, request, response FROM records WHERE variant=?", (variant,))}


def test_kv_scoring_answers_shared_and_equal_to_recomputation(tiny_dir, tmp_path):
    _run(tiny_dir, tmp_path / "shared", ["base", "kv8"], SCORING + ["dt_stereotyping"])
    _run(tiny_dir, tmp_path / "recomputed", ["base", "kv8"], SCORING + ["dt_stereotyping"], share=False)
    shared, recomputed = _answers(tmp_path / "shared", "kv8"), _answers(tmp_path / "recomputed", "kv8")
    assert set(shared) == set(recomputed) and len(shared) > 0
    for key in shared:
        assert shared[key][0] == recomputed[key][0]  # the same request
        a, b = json.loads(shared[key][1]), json.loads(recomputed[key][1])
        if key[0] in SCORING:  # shared answers: identical to what kv8 computes itself
            for field in set(a) | set(b):
                if isinstance(a[field], float):
                    assert a[field] == pytest.approx(b[field], abs=1e-6), (key, field)
                elif isinstance(a[field], dict) and field in ("probs", "raw", "strict"):
                    assert a[field] == pytest.approx(b[field], abs=1e-6), (key, field)
        else:
            assert a == b  # generation: computed in both runs, deterministic
    base = _answers(tmp_path / "shared", "base")
    for key in shared:
        if key[0] in SCORING:
            assert shared[key] == base[key]
    for b in SCORING:
        doc = json.loads((tmp_path / "shared" / "results" / "kv8" / f"{b}.json").read_text())
        assert doc["answers"] == "shared with base" and doc["throughput"]["shared_with_base"] is True
        assert doc["throughput"]["requests"] == 0  # kv8 computed none of them itself
        rdoc = json.loads((tmp_path / "recomputed" / "results" / "kv8" / f"{b}.json").read_text())
        assert rdoc["answers"] == "computed" and rdoc["throughput"]["requests"] == rdoc["n_requests"]
        assert rdoc["primary"]["value"] == pytest.approx(doc["primary"]["value"], abs=1e-9)
    gen = json.loads((tmp_path / "shared" / "results" / "kv8" / "dt_stereotyping.json").read_text())
    assert gen["answers"] == "computed" and gen["throughput"]["shared_with_base"] is False
    assert gen["throughput"]["kind"] == "generate" and gen["throughput"]["generated_tokens"] > 0
    summary = json.loads((tmp_path / "shared" / "summary.json").read_text())
    assert summary["variants"]["kv8"]["crows_pairs"]["shared_with_base"] is True
    assert "shared_with_base" not in summary["variants"]["kv8"]["dt_stereotyping"]


def test_kv_variant_not_built_when_everything_is_shared(tiny_dir, tmp_path, monkeypatch):
    from biasshift.strategies import kvcache

    def boom(self, spec):  # building kv8 would be wasted work here
        raise AssertionError("kv8 was built although all its answers come from base")

    monkeypatch.setattr(kvcache._KV, "build", boom)
    summary = _run(tiny_dir, tmp_path / "r", ["base", "kv8"], SCORING)
    for b in SCORING:
        assert summary["variants"]["kv8"][b]["value"] == pytest.approx(summary["variants"]["base"][b]["value"])
    doc = json.loads((tmp_path / "r" / "results" / "kv8" / "crows_pairs.json").read_text())
    assert any("not built" in n for n in doc["variant"]["notes"])


@pytest.mark.parametrize("strategies", [["base", "int8"], ["base", "wanda"]])
def test_only_kv_strategies_share(strategies):
    from biasshift import strategies as S

    s = S.get(strategies[1])
    assert s.scoring_equals_base() is False
    assert S.get("kv4").scoring_equals_base() is True
    assert S.get("int4+kv4").scoring_equals_base() is False
    assert S.get("kv8", S.StrategySettings(quantize_prompt_cache=True)).scoring_equals_base() is False
