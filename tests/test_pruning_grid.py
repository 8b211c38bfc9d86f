"""The pruning grid: SparseGPT and magnitude against independent computations, typed settings, ``method@setting``
names, sweeps, aliases of the old names, cache keys, measured zeros, and export() for serving engines."""

from __future__ import annotations

import importlib.util
import math
import types

import pytest
import torch
from torch import nn

from biasshift import strategies as S
from biasshift.errors import ConfigError
from biasshift.models import ModelSpec
from biasshift.strategies.pruning import Magnitude, SparseGPT, Wanda
from biasshift.strategies.sparsegpt import prune_magnitude_, prune_sparsegpt_, sparsegpt_prune_weight
from test_strategies import write_calib
from test_wanda import ToyModel, linear


# ------------------------------------------------------------------------------------------ SparseGPT math
def obs_reference(W, X, sparsity=0.5, n=0, m=0, blocksize=128, percdamp=0.01):
    """Straightforward OBS, one row at a time, in float64, with explicit inverses of the Hessian of the
    columns still free (columns fixed left to right), the same dampening and the same mask rule."""
    W = W.double()
    X = X.double()
    H = 2 * X.T @ X
    cols = W.shape[1]
    dead = torch.diag(H) == 0
    for j in range(cols):
        if dead[j]:
            H[j, j] = 1.0
    H = H + percdamp * torch.diag(H).mean() * torch.eye(cols, dtype=torch.float64)
    W = W.clone()
    W[:, dead] = 0
    bs = (blocksize // m) * m if m else blocksize
    # [inverse Hessian of the columns j.. still free]_jj, the OBS saliency denominator
    denom = torch.tensor([torch.linalg.inv(H[j:, j:])[0, 0].item() for j in range(cols)], dtype=torch.float64)
    out = torch.empty_like(W)
    for r in range(W.shape[0]):
        w = W[r].clone()
        mask = torch.zeros(cols, dtype=torch.bool)
        for j in range(cols):
            if not m and j % bs == 0:
                end = min(j + bs, cols)
                k = math.floor(end * sparsity + 1e-9) - math.floor(j * sparsity + 1e-9)
                sal = w[j:end] ** 2 / denom[j:end]
                order = sorted(range(end - j), key=lambda c: (sal[c].item(), c))
                for c in order[:k]:
                    mask[j + c] = True
            if m and j % m == 0:
                sal = w[j : j + m] ** 2 / denom[j : j + m]
                order = sorted(range(m), key=lambda c: (sal[c].item(), c))
                for c in order[:n]:
                    mask[j + c] = True
            hinv = torch.linalg.inv(H[j:, j:])
            q = 0.0 if mask[j] else w[j].item()
            err = (w[j] - q) / hinv[0, 0]
            w[j:] = w[j:] - err * hinv[0, :]
            w[j] = q
        out[r] = w
    return out


def _layer(seed=0, rows=4, cols=8, tokens=16):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(rows, cols, generator=g)
    X = torch.randn(tokens, cols, generator=g) * torch.linspace(0.2, 2.0, cols)  # uneven input scales
    return W, X


@pytest.mark.parametrize(
    "kw",
    [
        dict(sparsity=0.5),
        dict(sparsity=0.5, blocksize=4),  # two blocks: the first block's error propagates to the second
        dict(sparsity=0.3, blocksize=3),  # uneven blocks, floor(c * s) pruned up to column c
        dict(sparsity=0.75),
        dict(n=2, m=4),
        dict(n=1, m=4, blocksize=4),
    ],
)
def test_sparsegpt_matches_a_loop_obs_reference(kw):
    W, X = _layer()
    H = 2 * X.T @ X
    ours = sparsegpt_prune_weight(W, H, **kw)
    ref = obs_reference(W, X, **kw)
    assert torch.equal(ours == 0, ref == 0)  # the same mask
    torch.testing.assert_close(ours.double(), ref, atol=2e-4, rtol=1e-4)
    # it is not plain masking: the kept weights moved (the OBS update)
    kept = ours != 0
    assert float((ours[kept] - W[kept]).abs().max()) > 1e-3


def test_sparsegpt_reduces_the_output_error_versus_masking_alone():
    W, X = _layer(seed=3, rows=6, cols=16, tokens=64)
    ours = sparsegpt_prune_weight(W, 2 * X.T @ X, sparsity=0.5)
    masked = W * (ours != 0)
    assert float(((X @ (ours - W).T) ** 2).sum()) < float(((X @ (masked - W).T) ** 2).sum())


def test_sparsegpt_dead_input_columns_are_pruned():
    W, X = _layer()
    X[:, 2] = 0.0  # input 2 is always zero: its weights cannot matter
    out = sparsegpt_prune_weight(W, 2 * X.T @ X, sparsity=0.25)
    assert bool((out[:, 2] == 0).all())
    assert ((out == 0).sum(1) == 2).all()  # still floor(8 * 0.25) per row


def test_prune_sparsegpt_through_the_layer_machinery():
    """The sequential pass collects H = 2 X X^T from the layer's real inputs (here: embedding rows)."""
    g = torch.Generator().manual_seed(1)
    emb = torch.randn(10, 8, generator=g)
    W = torch.randn(4, 8, generator=g)
    ids = torch.randint(0, 10, (2, 8), generator=g)  # 16 calibration rows
    model = ToyModel(emb, [linear(W.tolist())])
    report = prune_sparsegpt_(model, ids, sparsity=0.5)
    X = emb[ids.reshape(-1)]
    ref = obs_reference(W, X, sparsity=0.5)
    torch.testing.assert_close(model.layers[0].weight.double(), ref, atol=2e-4, rtol=1e-4)
    assert report.layers == {"layers.0": (16, 32)} and report.overall_sparsity == 0.5


@pytest.mark.parametrize("n, m", [(2, 4), (4, 8)])
def test_sparsegpt_nm_masks_are_exact(n, m):
    g = torch.Generator().manual_seed(5)
    W = torch.randn(8, 32, generator=g)
    X = torch.randn(40, 32, generator=g)
    out = sparsegpt_prune_weight(W, 2 * X.T @ X, n=n, m=m)
    zeros = (out.reshape(8, -1, m) == 0).sum(-1)
    assert bool((zeros == n).all())


# ------------------------------------------------------------------------------------------ magnitude
def test_magnitude_masks_by_hand():
    w = [[0.1, -0.9, 0.3, -0.2, 0.8, 0.05, -0.4, 0.6],
         [-1.0, 0.2, 0.2, 0.7, -0.1, 0.3, 0.9, -0.5]]
    # unstructured 50 %, per output row: the 4 smallest |w| of each row
    model = ToyModel(torch.eye(8), [linear(w)])
    prune_magnitude_(model, sparsity=0.5)
    expect = torch.tensor([[0, -0.9, 0, 0, 0.8, 0, -0.4, 0.6],
                           [-1.0, 0, 0, 0.7, 0, 0, 0.9, -0.5]])
    assert torch.equal(model.layers[0].weight, expect)
    # 2:4: the 2 smallest of each aligned group of 4 (row 1, group 0: 0.2 vs 0.2 tie -> the lower column goes)
    model = ToyModel(torch.eye(8), [linear(w)])
    prune_magnitude_(model, n=2, m=4)
    expect = torch.tensor([[0, -0.9, 0.3, 0, 0.8, 0, 0, 0.6],
                           [-1.0, 0, 0, 0.7, 0, 0, 0.9, -0.5]])
    assert torch.equal(model.layers[0].weight, expect)
    # 25 %: floor(8 * 0.25) = 2 per row
    model = ToyModel(torch.eye(8), [linear(w)])
    rep = prune_magnitude_(model, sparsity=0.25)
    expect = torch.tensor([[0, -0.9, 0.3, -0.2, 0.8, 0, -0.4, 0.6],
                           [-1.0, 0, 0.2, 0.7, 0, 0.3, 0.9, -0.5]])
    assert torch.equal(model.layers[0].weight, expect)
    assert rep["layers"] == {"layers.0": [4, 16]} and rep["overall_sparsity"] == 0.25


# ------------------------------------------------------------------------------------------ names
def test_parametrised_names_and_aliases():
    assert S.parse_list("wanda@0.5,wanda@2:4,wanda@0.50") == ["base", "wanda", "wanda-2:4"]
    assert S.canonical("wanda@0.5") == "wanda" and S.canonical("wanda-2:4") == "wanda-2:4"
    assert S.parse_list("magnitude@0.5,sparsegpt@0.6,wanda@0.3,sparsegpt@4:8,magnitude@2:4") == [
        "base", "magnitude@0.5", "sparsegpt@0.6", "wanda@0.3", "sparsegpt@4:8", "magnitude@2:4"]
    assert S.parse_list("wanda@2:4,4:8,sparsegpt@0.2,0.4") == [
        "base", "wanda-2:4", "wanda@4:8", "sparsegpt@0.2", "sparsegpt@0.4"]
    assert S.canonical("int8+sparsegpt@0.5") == "sparsegpt@0.5+int8"
    assert S.canonical("kv4+wanda@2:4") == "wanda-2:4+kv4"
    w = S.get("wanda@2:4")
    assert isinstance(w, Wanda) and w.name == "wanda-2:4" and w.params.pattern == (2, 4) and w.params.sparsity == 0.5
    with pytest.raises(ConfigError, match="two pruning methods"):
        S.canonical("wanda+magnitude@0.5")


def test_old_wanda_request_is_unchanged():
    """What `requested()` stored for `wanda` in run directories made before typed settings (runs/demo)."""
    settings = S.StrategySettings(calib_data="cal.txt", calib_samples=16, calib_seqlen=512)
    old = {"config": {"batch_size": 1, "calib_data": "cal.txt", "calib_samples": 16, "calib_seqlen": 512,
                      "calib_text": "raw, no chat template, no special tokens", "comparison_group": "per output row",
                      "method": "wanda", "pattern": "unstructured", "prune_dtype": "float32",
                      "scope": "every nn.Linear inside the decoder layers (not embeddings, norms, lm_head)",
                      "seed": 0, "sparsity": 0.5}, "strategy": "wanda"}
    for alias in ("wanda", "wanda@0.5"):
        assert S.get(alias, settings).requested() == old
    two = S.get("wanda@2:4", settings).requested()
    assert two["strategy"] == "wanda-2:4"
    assert two["config"] == {**old["config"], "pattern": "2:4",
                             "comparison_group": "aligned blocks of 4 input columns per output row"}


def test_sweeps_expand_and_bad_ranges_are_refused():
    assert S.parse_list("sparsegpt@0.1:0.3:0.1") == ["base", "sparsegpt@0.1", "sparsegpt@0.2", "sparsegpt@0.3"]
    assert S.expand("sparsegpt@0.1:0.6:0.1") == [f"sparsegpt@0.{i}" for i in range(1, 7)]
    assert S.expand("magnitude@0.5:0.5:0.1") == ["magnitude@0.5"]
    assert S.expand("wanda@0.3:0.5:0.2+int8") == ["wanda@0.3+int8", "wanda+int8"]
    for bad, words in [
        ("sparsegpt@0.3:0.1:0.1", "below its start"),
        ("sparsegpt@0.1:0.5:0.3", "is not start \\+ k \\* step"),
        ("sparsegpt@0.5:1.0:0.25", "0 < sparsity < 1"),
        ("sparsegpt@0.1:0.5:0", "step must be a number > 0"),
        ("sparsegpt@0.1:0.2", "two whole numbers"),
        ("sparsegpt@1.5", "0 < sparsity < 1"),
        ("sparsegpt@0", "0 < sparsity < 1"),
        ("wanda@4:4", "0 < N < M"),
        ("wanda@3:2", "0 < N < M"),
        ("magnitude", "needs a setting"),
        ("pruneit@0.5", "unknown strategy"),
        ("int8@0.5", "unknown strategy"),
    ]:
        with pytest.raises(ConfigError, match=words) as e:
            S.parse_list(bad)
        if "@" in bad and bad.split("@")[0] in ("sparsegpt", "wanda"):
            assert "valid forms" in str(e.value) or "choose e.g." in str(e.value) or "step" in str(e.value)
    with pytest.raises(ConfigError, match="sweep of 3 variants"):
        S.get("sparsegpt@0.1:0.3:0.1")
    with pytest.raises(ConfigError, match="not a strategy name"):
        S.parse_list("0.5,wanda")


def test_typed_settings_are_validated():
    with pytest.raises(ConfigError, match="alpha: unknown setting"):
        Wanda("w", None, {"sparsity": 0.5, "alpha": 1})
    with pytest.raises(ConfigError, match="0 < sparsity < 1"):
        Magnitude("m", None, {"sparsity": 1.5})
    with pytest.raises(ConfigError, match="0 < N < M"):
        Wanda("w", None, {"pattern": (4, 2)})
    with pytest.raises(ConfigError, match="contradicts pattern"):
        Wanda("w", None, {"pattern": (2, 4), "sparsity": 0.3})
    with pytest.raises(ConfigError, match="blocksize"):
        SparseGPT("s", None, {"blocksize": 0})
    assert Wanda("w", None, {"pattern": "4:8"}).params.sparsity == 0.5
    assert SparseGPT("s").params.model_dump() == {"sparsity": 0.5, "pattern": None, "blocksize": 128, "percdamp": 0.01}


def test_sweep_axis_reads_method_rate_pattern():
    assert S.sweep_axis(S.get("sparsegpt@0.6").config()) == ("sparsegpt", 0.6, "unstructured")
    assert S.sweep_axis(S.get("magnitude@4:8").config()) == ("magnitude", 0.5, "4:8")
    comp = {"order": ["wanda-2:4", "int8"], "wanda-2:4": S.get("wanda-2:4").config(), "int8": S.get("int8").config()}
    assert S.sweep_axis(comp) == ("wanda", 0.5, "2:4")
    assert S.sweep_axis(S.get("int8").config()) is None and S.sweep_axis(None) is None


# ------------------------------------------------------------------------------------------ cache keys
def _ctx(tmp_path):
    return types.SimpleNamespace(base_path=tmp_path, model_info={"fingerprint": "base-fp"})


def test_cache_keys_follow_the_settings(tmp_path):
    from biasshift.strategies.varcache import variant_key

    a = write_calib(tmp_path / "a.txt", seed=0)
    b = write_calib(tmp_path / "b.txt", seed=1)
    ctx = _ctx(tmp_path)

    def key(name, **kw):
        st = S.StrategySettings(**{"calib_data": str(a), "calib_samples": 4, "calib_seqlen": 32, **kw})
        return variant_key(S.get(name, st).material(ctx))

    for method in ("sparsegpt", "wanda"):
        base = key(f"{method}@0.5")
        assert key(f"{method}@0.5") == base
        assert len({base, key(f"{method}@0.6"), key(f"{method}@2:4"), key(f"{method}@4:8"),
                    key(f"{method}@0.5", calib_samples=3), key(f"{method}@0.5", calib_data=str(b)),
                    key(f"{method}@0.5", seed=1)}) == 7
    # magnitude: no calibration, so the --calib-* settings are not in its key
    mag = key("magnitude@0.5")
    assert mag == key("magnitude@0.5", calib_samples=3) == key("magnitude@0.5", calib_data=str(b))
    assert mag == key("magnitude@0.5", calib_data="c4", seed=7)
    assert mag != key("magnitude@0.6") and mag != key("magnitude@2:4")
    assert len({key("magnitude@0.5"), key("wanda@0.5"), key("sparsegpt@0.5")}) == 3
    sg = S.get("sparsegpt@0.5", S.StrategySettings(calib_data=str(a)))
    assert variant_key(sg.material(ctx)) != variant_key(
        SparseGPT("sparsegpt@0.5", S.StrategySettings(calib_data=str(a)), {"percdamp": 0.1}).material(ctx))


# ------------------------------------------------------------------------------------------ on the tiny model
@pytest.fixture(scope="module")
def spec(tiny_dir):
    return ModelSpec(str(tiny_dir), dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    return write_calib(tmp_path_factory.mktemp("grid_calib") / "calib.txt")


def test_magnitude_build_measures_exact_zeros_and_needs_no_calibration(spec, tmp_path, monkeypatch):
    monkeypatch.setenv("BIASSHIFT_CACHE", str(tmp_path / "cache"))
    v = S.get("magnitude@0.25", S.StrategySettings(calib_data="c4")).build(spec)  # c4 would need the network
    m = v.info["measured"]
    assert m["sparsity"] == 0.25 and m["pruned_checkpoint_sparsity"]["overall"] == 0.25
    per = m["zero_fraction_per_linear"]
    assert len(per) == 14 and set(per.values()) == {0.25}
    assert m["calibration"]["source"] == "none"
    assert v.info["config"]["method"] == "magnitude" and v.info["config"]["calibration"] is None
    # another calibration setting: the same cache entry
    again = S.get("magnitude@0.25", S.StrategySettings(calib_data="elsewhere.txt", calib_samples=3)).build(spec)
    assert again.info["measured"]["cache"] == {**m["cache"], "hit": True}


def test_sparsegpt_build_records_calibration_and_nm(spec, calib, tmp_path, monkeypatch):
    from biasshift.data import sha256_file

    monkeypatch.setenv("BIASSHIFT_CACHE", str(tmp_path / "cache"))
    st = S.StrategySettings(calib_data=str(calib), calib_samples=4, calib_seqlen=32)
    v = S.get("sparsegpt@2:4", st).build(spec)
    m = v.info["measured"]
    assert m["n_m_pattern_holds"] is True and m["n_m_groups_exact"] is True
    assert m["n_m_groups_with_exactly_n_zeros_fraction"] == 1.0
    assert m["sparsity"] == 0.5 and set(m["zero_fraction_per_linear"].values()) == {0.5}
    assert m["calibration"]["sha256"] == sha256_file(calib) and m["calibration"]["nsamples"] == 4
    cfg = v.info["config"]
    assert (cfg["method"], cfg["sparsity"], cfg["pattern"]) == ("sparsegpt", 0.5, "2:4")
    assert cfg["percdamp"] == 0.01 and cfg["blocksize"] == 128 and cfg["calib_samples"] == 4
    # the kept weights were updated, not only masked
    from biasshift.models import load_model

    base = load_model(spec).model
    w0 = base.model.layers[0].mlp.down_proj.weight.detach()
    w1 = v.model.model.layers[0].mlp.down_proj.weight.detach()
    kept = w1 != 0
    assert float((w1[kept] - w0[kept]).abs().max()) > 1e-6


# ------------------------------------------------------------------------------------------ export()
def test_export_for_a_serving_engine(spec, tiny_dir, calib, tmp_path, monkeypatch):
    monkeypatch.setenv("BIASSHIFT_CACHE", str(tmp_path / "cache"))
    sv = S.get("base").export(spec)
    assert (sv.path, sv.tokenizer_path, sv.quantization, sv.kv_cache_dtype) == (str(tiny_dir), str(tiny_dir), None, "auto")
    fp8 = S.get("kv-fp8").export(spec)
    assert fp8.path == str(tiny_dir) and fp8.kv_cache_dtype == "fp8" and fp8.info["config"]["kv_cache_dtype"] == "fp8"
    with pytest.raises(ConfigError, match="kv-fp8 is vLLM's fp8 KV cache; run it with --engine vllm"):
        S.get("kv-fp8").build(spec)
    with pytest.raises(ConfigError, match="--engine vllm"):
        S.prepare(["base", "kv-fp8"], S.StrategySettings(engine="hf"))
    S.prepare(["base", "kv-fp8"], S.StrategySettings(engine="vllm"))
    for name, words in (("kv4", "HQQ QuantizedCache"), ("kv8", "HQQ"), ("int8", "NF4 only"), ("int4", "NF4 only"),
                        ("nf4+kv4", "kv4")):
        with pytest.raises(ConfigError, match=words):
            S.get(name).export(spec)
    assert S.get("nf4").export(spec).quantization == "bitsandbytes"
    st = S.StrategySettings(calib_data=str(calib), calib_samples=4, calib_seqlen=32)
    pruned = S.get("magnitude@0.5+nf4+kv-fp8", st).export(spec)
    assert pruned.quantization == "bitsandbytes" and pruned.kv_cache_dtype == "fp8"
    cache = pruned.info["measured"]["magnitude@0.5"]["cache"]
    assert pruned.path == cache["path"] and pruned.tokenizer_path == str(tiny_dir)
    assert pruned.info["requested"] == S.get("magnitude@0.5+nf4+kv-fp8", st).requested()
    assert S.sweep_axis(pruned.info["config"]) == ("magnitude", 0.5, "unstructured")


needs_bnb = pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes not installed")


@needs_bnb
def test_sparsegpt_plus_int8_keeps_pruned_zeros(spec, calib, tmp_path, monkeypatch):
    monkeypatch.setenv("BIASSHIFT_CACHE", str(tmp_path / "cache"))
    st = S.StrategySettings(calib_data=str(calib), calib_samples=4, calib_seqlen=32)
    v = S.get("int8+sparsegpt@0.5", st).build(spec)
    assert v.info["components"] == ["sparsegpt@0.5", "int8"]
    assert v.info["measured"]["sparsegpt@0.5"]["pruned_checkpoint_sparsity"]["overall"] == 0.5
    assert v.info["measured"]["sparsegpt@0.5"]["sparsity"] >= 0.5
    assert isinstance(v.model.model.layers[0].mlp.up_proj, nn.Module)
