"""AAVE literature perplexity: per-work windows, every token scored once, metrics by hand, and the tiny model."""

from __future__ import annotations

import math
import shutil

import pytest
import torch

from biasshift import benchmarks
from biasshift.benchmarks.aave_literature import FILES, WORKS, AAVELiterature
from biasshift.benchmarks.base import RequestContext
from biasshift.engine.hf import HFEngine, anchored_tokenize
from biasshift.errors import ConfigError, DataError
from conftest import FIXTURE_DATA
from answers import typed

NAMES = ("Ashby_RedderBlood", "Brown_Clotel", "Fleming_ HopesHighway")
CHARS = RequestContext(render=lambda p: p.text, seed=0, chat_template=False, tokenize=lambda s: [1] + [ord(c) for c in s])


def load(root=FIXTURE_DATA, **opts):
    b = AAVELiterature(opts)
    return b, b.load({FILES[n].rel: root / FILES[n].rel for n in NAMES})


def test_registry_and_files():
    assert benchmarks.get("aave_literature") is AAVELiterature
    assert len(WORKS) == 52 and len(AAVELiterature.data_files) == 52
    assert FILES["Fleming_ HopesHighway"].url.endswith("/literature_unprocessed/Fleming_%20HopesHighway.txt")
    assert all("8c0b26e7080f5e60bb3fd62b2061972b8941fb23" in f.url and len(f.sha256) == 64 for f in FILES.values())
    assert AAVELiterature.is_quality_metric and AAVELiterature.default_options["window"] == 2048
    with pytest.raises(ConfigError, match="window"):
        AAVELiterature({"window": 1})


def test_load_windows_every_token_once():
    b, items = load(window=16)
    assert [it.id for it in items] == list(NAMES)
    assert [it.fields["author"] for it in items] == ["Ashby", "Brown", "Fleming"]
    assert items[0].fields["title_line"] == "Ashby, William M. Redder Blood   [ 1915 ]"
    for it in items:
        reqs = b.requests(it, CHARS)
        ids = CHARS.tokenize(it.fields["text"])
        assert reqs[0].request.ids[0] == 1  # each work starts at the anchor token
        assert [t for r in reqs for t in r.request.ids[1:]] == ids[1:]  # tokenized once, every token a target once
        assert all(len(r.request.ids) == 16 for r in reqs[:-1]) and len(reqs) == math.ceil((len(ids) - 1) / 15)
        assert all(r.item_id == it.id for r in reqs)
    b2, items2 = load(window=16, max_windows=2)
    assert [len(b2.requests(it, CHARS)) for it in items2] == [2, 2, 2]


def test_metrics_by_hand():
    b, items = load(window=16)
    res = {}
    for k, it in enumerate(items[:2]):
        for r in b.requests(it, CHARS):
            n = len(r.request.ids) - 1
            res[r.key] = {"sum": -(k + 1.0) * n, "mean": -(k + 1.0), "n_tokens": n}  # work 0: 1 nat/token, work 1: 2
    units = b.units(items[:2], typed(res))
    n0 = len(items[0].fields["text"])
    assert units[0]["unit"] == "Ashby_RedderBlood" and sum(units[0]["n_tokens"]) == n0
    r = b.compute(units)
    w0, w1 = len(units[0]["nll"]), len(units[1]["nll"])
    assert r.value == pytest.approx(math.exp((w0 * 1 + w1 * 2) / (w0 + w1)))  # mean over windows, then exp
    assert r.per_group["work"]["Ashby_RedderBlood"]["ppl"] == pytest.approx(math.e)
    assert r.per_group["work"]["Brown_Clotel"]["ppl"] == pytest.approx(math.e ** 2)
    assert r.metrics["n_works"] == 2 and r.metrics["n_windows"] == w0 + w1
    # unequal windows: ppl (window mean) differs from the token-weighted one
    u = [{"unit": "a", "author": "A", "nll": [30.0, 2.0], "n_tokens": [10, 1]},
         {"unit": "b", "author": "A", "nll": [6.0], "n_tokens": [3]}]
    r2 = b.compute(u)
    assert r2.value == pytest.approx(math.exp((3.0 + 2.0 + 2.0) / 3))
    assert r2.metrics["ppl_token_weighted"] == pytest.approx(math.exp(38 / 14))
    assert r2.per_group["author"]["A"]["n_works"] == 2 and r2.per_group["work"]["a"]["ppl"] == pytest.approx(math.exp(2.5))


def test_tiny_model_matches_direct_forward(tiny):
    model, tok = tiny
    b, items = load(window=24)
    ctx = RequestContext(render=lambda p: p.text, seed=0, chat_template=False, tokenize=anchored_tokenize(tok))
    reqs = [r for it in items for r in b.requests(it, ctx)]
    out = {}
    HFEngine(model, tok, batch_size=3).run(reqs, lambda rs: out.update({k.key: r for k, r in rs}))
    r = b.compute(b.units(items, typed(out)))
    per_window = []
    for it in items:
        ids = anchored_tokenize(tok)(it.fields["text"])
        nlls = []
        start = 0
        while start < len(ids) - 1:  # independent re-implementation of the windowing
            w = ids[start:start + 24]
            with torch.no_grad():
                lp = torch.log_softmax(model(torch.tensor([w])).logits[0, :-1].float(), -1)
            nlls.append(-float(lp.gather(1, torch.tensor(w[1:])[:, None]).mean()))
            start += 23
        per_window += nlls
        assert r.per_group["work"][it.id]["ppl"] == pytest.approx(math.exp(sum(nlls) / len(nlls)), rel=1e-4)
    assert r.value == pytest.approx(math.exp(sum(per_window) / len(per_window)), rel=1e-4)


def test_data_errors(tmp_path):
    d = FILES["Ashby_RedderBlood"].rel.rsplit("/", 1)[0]
    shutil.copytree(FIXTURE_DATA / d, tmp_path / d)
    (tmp_path / FILES["Brown_Clotel"].rel).write_text("  \n\n")
    with pytest.raises(DataError, match=r"the text is empty.*Brown_Clotel.txt"):
        load(tmp_path)
    (tmp_path / FILES["Brown_Clotel"].rel).write_bytes(b"Title\n\xff\xfe text")
    with pytest.raises(DataError, match=r"not UTF-8.*Brown_Clotel.txt"):
        load(tmp_path)
    with pytest.raises(DataError, match="none of the 52 works"):
        AAVELiterature().load({})


def test_report_pairs_works(tmp_path):
    from biasshift.report import build_report
    from report_helpers import write_run

    base = [{"unit": f"w{i}", "author": "A" if i < 3 else "B", "nll": [10.0, 4.0], "n_tokens": [5, 2]} for i in range(6)]
    var = [dict(u, nll=[12.0, 5.0]) for u in base]
    run = write_run(tmp_path / "run", {"base": {"aave_literature": base}, "int8": {"aave_literature": var}})
    rep = build_report([run], n_boot=100, n_perm=100, samples=0)
    row = next(r for r in rep.rows if r.benchmark == "aave_literature" and r.primary)
    assert row.quality and row.test.startswith("paired permutation") and row.n_paired == 6
    assert row.base == pytest.approx(math.e ** 2) and row.value == pytest.approx(math.exp(2.45))
