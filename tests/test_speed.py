"""Batching for speed: token-budget batches, auto batch size with out-of-memory backoff, --compile on CPU."""

from __future__ import annotations

import json

import pytest
import torch

from biasshift.engine.requests import answer_to_dict
from biasshift.engine.hf import HFEngine
from biasshift.engine.requests import ChoiceRequest, GenerateRequest, Keyed, LoglikRequest
from biasshift.errors import ConfigError
from conftest import FIXTURE_DATA

SENTS = [
    "The man went to the market.",
    "She is a great engineer and a kind person who said yes to the doctor.",
    "Poor people are lazy.",
    "Rich people are lazy, said the nurse to the man and the woman at the market today.",
    "He couldn't figure out the issue with the rope.",
    "Yes or no?",
    "A B C D E F.",
    "The doctor said yes, the nurse said no, and the engineer went to the market.",
    "I agree.",
    "Black and white, Asian, Hispanic, Native American.",
]


def mixed_requests() -> list[Keyed]:
    reqs: list[Keyed] = []
    for i, s in enumerate(SENTS):
        reqs.append(Keyed(f"l{i}", f"l{i}", LoglikRequest(context="", continuation=s)))
        reqs.append(Keyed(f"c{i}", f"c{i}", ChoiceRequest(prompt=s + " Please answer yes or no.", choices=("yes", "no"))))
    for i, s in enumerate(SENTS[:6]):
        reqs.append(Keyed(f"g{i}", f"g{i}", GenerateRequest(prompt=s, max_new_tokens=5)))
        reqs.append(Keyed(f"s{i}", f"s{i}", GenerateRequest(prompt=s, max_new_tokens=4, do_sample=True, n=2, seed=3)))
    return reqs


def run(engine: HFEngine, reqs: list[Keyed], done=()) -> dict[str, dict]:
    got: dict[str, dict] = {}
    engine.run(reqs, lambda rs: got.update({k.key: answer_to_dict(r) for k, r in rs}), done=done)  # JSON form
    return got


def assert_same_answers(a: dict[str, dict], b: dict[str, dict], tol: float = 1e-4) -> None:
    assert set(a) == set(b)
    for k in a:
        x, y = a[k], b[k]
        if "sum" in x:
            assert abs(x["sum"] - y["sum"]) < tol and x["n_tokens"] == y["n_tokens"], k
        elif "probs" in x:
            for lab in x["probs"]:
                assert abs(x["probs"][lab] - y["probs"][lab]) < tol, k
        else:
            assert [s["text"] for s in x["samples"]] == [s["text"] for s in y["samples"]], k


def test_token_budget_batching_gives_the_same_answers(tiny):
    model, tok = tiny
    reqs = mixed_requests()
    fixed_engine = HFEngine(model, tok, batch_size=8)
    fixed = run(fixed_engine, reqs)
    budget_engine = HFEngine(model, tok, batch_size=8, max_batch_tokens=40)
    budget = run(budget_engine, reqs)
    assert_same_answers(fixed, budget)
    one = run(HFEngine(model, tok, batch_size=1), reqs)
    assert_same_answers(one, budget)
    assert budget_engine.stats.batches > fixed_engine.stats.batches  # long requests got smaller batches
    assert budget_engine.describe()["max_batch_tokens"] == 40


def test_token_budget_caps_padded_tokens_and_keeps_long_prompts_alone(tiny):
    model, tok = tiny
    eng = HFEngine(model, tok, batch_size=100, max_batch_tokens=30)
    reqs = [Keyed(f"l{i}", f"l{i}", LoglikRequest(context="", continuation=s)) for i, s in enumerate(SENTS)]
    lengths = [len(eng.encode(r.request.continuation)) + (0 if eng.prepend_bos else 1) for r in reqs]
    batches = eng._batches(reqs, lengths, set())
    assert sorted(i for b in batches for i in b) == list(range(len(reqs)))  # every request exactly once
    for b in batches:
        cost = len(b) * max(lengths[i] for i in b)
        assert cost <= 30 or len(b) == 1
    # sorted longest first: the first batch holds the longest requests, so short ones share batches
    assert len(batches[0]) <= len(batches[-1])
    # generation: rows (samples) and new tokens count towards the budget
    gens = [Keyed(f"s{i}", f"s{i}", GenerateRequest(prompt=s, max_new_tokens=10, do_sample=True, n=3)) for i, s in enumerate(SENTS)]
    plen = [len(eng.encode(g.request.prompt)) for g in gens]
    gb = eng._batches(gens, plen, set(), rows=[3] * len(gens), spans=[p + 10 for p in plen])
    for b in gb:
        assert 3 * len(b) * max(plen[i] + 10 for i in b) <= 30 or len(b) == 1


def test_token_budget_batches_do_not_depend_on_what_is_stored(tiny):
    """The resume property: batches are cut over all requests, then fully stored ones are skipped."""
    model, tok = tiny
    reqs = [Keyed(f"l{i}", f"l{i}", LoglikRequest(context="", continuation=s)) for i, s in enumerate(SENTS)]
    full = run(HFEngine(model, tok, batch_size=4, max_batch_tokens=48), reqs)
    eng = HFEngine(model, tok, batch_size=4, max_batch_tokens=48)
    lengths = [len(eng.encode(r.request.continuation)) for r in reqs]
    first = {reqs[i].key for i in eng._batches(reqs, lengths, set())[0]}
    part = run(HFEngine(model, tok, batch_size=4, max_batch_tokens=48), reqs, done=first)
    assert set(part) == set(full) - first
    for k in part:
        assert part[k] == full[k]  # bit-identical: same batch composition


def _oom_above(monkeypatch, model, max_rows: int, seen: list[int]):
    """Make the model raise CUDA out-of-memory for batches of more than ``max_rows`` rows (on CPU)."""
    original = model.forward

    def forward(*args, **kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids.shape[0] > max_rows:
            raise torch.cuda.OutOfMemoryError(f"simulated: {ids.shape[0]} rows > {max_rows}")
        seen.append(ids.shape[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "forward", forward)


def test_auto_batch_oom_backoff_loses_no_work_and_keeps_results(tiny, monkeypatch):
    model, tok = tiny
    reqs = mixed_requests()
    ref = run(HFEngine(model, tok, batch_size=1), reqs)
    seen: list[int] = []
    _oom_above(monkeypatch, model, 3, seen)
    eng = HFEngine(model, tok, batch_size="auto")
    assert eng.auto_batch
    eng.batch_size = 16  # "start high" (the CUDA default is larger still)
    committed: list[str] = []

    def on_batch(rs):
        committed.extend(k.key for k, _ in rs)

    got: dict[str, dict] = {}
    eng.run(reqs, lambda rs: (on_batch(rs), got.update({k.key: answer_to_dict(r) for k, r in rs})))
    assert sorted(committed) == sorted(r.key for r in reqs)  # every request answered exactly once
    assert_same_answers(ref, got)
    assert eng.stats.oom_backoffs > 0
    assert max(seen) <= 3
    # the size that fitted is remembered per request kind, so later batches of a kind are pre-split
    assert set(eng.stats.token_caps) == {"loglik", "choice", "generate"}
    backoffs = eng.stats.oom_backoffs
    again = run(eng, reqs)
    assert_same_answers(ref, again)
    assert eng.stats.oom_backoffs == backoffs  # second call: no new OOM, the remembered caps fit


def test_fixed_batch_size_does_not_hide_oom(tiny, monkeypatch):
    model, tok = tiny
    _oom_above(monkeypatch, model, 2, [])
    reqs = [Keyed(f"l{i}", f"l{i}", LoglikRequest(context="", continuation=s)) for i, s in enumerate(SENTS)]
    with pytest.raises(torch.cuda.OutOfMemoryError):
        run(HFEngine(model, tok, batch_size=4), reqs)


def test_compile_is_rejected_on_cpu(tiny, tmp_path):
    model, tok = tiny
    with pytest.raises(ConfigError, match="CUDA"):
        HFEngine(model, tok, batch_size=2, compile=True)
    from typer.testing import CliRunner

    from biasshift.cli import app

    r = CliRunner().invoke(app, ["run", "--model", "x", "--out", str(tmp_path / "o"), "--device", "cpu", "--compile"])
    assert r.exit_code == 2 and "CUDA" in r.output


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="--compile and the CUDA auto batch size need a CUDA device")
def test_compile_and_auto_batch_on_cuda(tiny):  # pragma: no cover - GPU only
    model, tok = tiny
    m = model.to("cuda")
    try:
        reqs = mixed_requests()
        eager = run(HFEngine(m, tok, batch_size=4), reqs)
        eng = HFEngine(m, tok, batch_size="auto", compile=True)
        assert eng.batch_size >= 64
        assert_same_answers(eager, run(eng, reqs), tol=1e-3)
    finally:
        model.to("cpu")


def test_run_records_batching_settings(tiny_dir, tmp_path):
    from biasshift.runner import RunConfig, Runner

    cfg = RunConfig(model=str(tiny_dir), benchmarks=["crows_pairs"], out=tmp_path / "r", data_dir=FIXTURE_DATA,
                    batch_size=4, max_batch_tokens=64, device="cpu")
    Runner(cfg, progress=False).run()
    doc = json.loads((tmp_path / "r/results/base/crows_pairs.json").read_text())
    assert doc["inference"]["engine"]["max_batch_tokens"] == 64
    assert doc["inference"]["engine"]["compile"] is False


def test_executor_ray_without_ray_is_a_clear_error(tmp_path, monkeypatch):
    import importlib.util

    from typer.testing import CliRunner

    from biasshift.cli import app

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    r = CliRunner().invoke(app, ["run", "--model", "x", "--out", str(tmp_path / "o"), "--executor", "ray"])
    assert r.exit_code == 2 and "biasshift[ray]" in r.output
    r = CliRunner().invoke(app, ["run", "--model", "x", "--out", str(tmp_path / "o"), "--executor", "dask"])
    assert r.exit_code == 2 and "local or ray" in r.output
