"""Acceleration strategies on the tiny model: registry, bitsandbytes, Wanda + variant cache, checkpoints."""

from __future__ import annotations

import importlib.util
import json
import random
import shutil

import pytest
import torch

from biasshift import strategies as S
from biasshift.errors import BiasshiftError, ConfigError, DependencyError
from biasshift.models import ModelSpec

WORDS = ("the man woman doctor nurse market said yes no engineer kind person rope issue answer question "
         "people poor rich lazy great agree disagree").split()
TEXT = "The man and the woman went to the market. The doctor said yes, the nurse said no."

needs_bnb = pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes not installed")


def write_calib(path, n_docs=8, words=60, seed=0):
    rng = random.Random(seed)
    path.write_text("\n\n".join(" ".join(rng.choice(WORDS) for _ in range(words)) for _ in range(n_docs)))
    return path


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    return write_calib(tmp_path_factory.mktemp("calib") / "calib.txt")


@pytest.fixture(scope="module")
def spec(tiny_dir):
    return ModelSpec(str(tiny_dir), dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def settings(calib):
    return S.StrategySettings(calib_data=str(calib), calib_samples=4, calib_seqlen=32, seed=0)


@pytest.fixture(scope="module")
def base_logits(tiny):
    model, tok = tiny
    ids = torch.tensor([tok(TEXT)["input_ids"]])
    with torch.no_grad():
        return ids, model(ids).logits[0].float()


def logits_of(variant, ids):
    with torch.no_grad():
        return variant.model(ids).logits[0].float()


def kl(p_logits, q_logits):
    p = torch.log_softmax(p_logits, -1)
    q = torch.log_softmax(q_logits, -1)
    return float((p.exp() * (p - q)).sum(-1).mean())


def corr(a, b):
    return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])


# ------------------------------------------------------------------------------------------ registry
def test_every_requested_name_parses():
    names = S.parse_list("base,int8,int4,nf4,kv4,kv8,wanda,wanda-2:4,int4+kv4,wanda+int8,awq,gptq")
    assert names == ["base", "int8", "int4", "nf4", "kv4", "kv8", "wanda", "wanda-2:4", "int4+kv4", "wanda+int8",
                     "awq", "gptq"]
    assert S.parse_list("int8") == ["base", "int8"]


def test_combinations_are_normalised_to_stage_order():
    assert S.canonical("kv4+int4") == "int4+kv4"
    assert S.canonical("int8 + wanda") == "wanda+int8"
    assert S.canonical("kv8+int4+wanda-2:4") == "wanda-2:4+int4+kv8"
    assert S.canonical("awq+kv4") == "awq+kv4"
    assert S.parse_list("int4+kv4,kv4+int4") == ["base", "int4+kv4"]
    comp = S.get("int8+wanda")
    assert isinstance(comp, S.Composite) and [p.name for p in comp.parts] == ["wanda", "int8"]
    assert comp.requested()["strategy"] == "wanda+int8"


@pytest.mark.parametrize(
    "name, words",
    [
        ("int8+int4", "two weight quantizers"),
        ("nf4+int8", "two weight quantizers"),
        ("kv4+kv8", "two KV-cache settings"),
        ("wanda+wanda-2:4", "two pruning methods"),
        ("int8+int8", "the same strategy twice"),
        ("awq+int8", "cannot be quantized again"),
        ("gptq+wanda", "cannot be pruned"),
        ("awq+gptq", "two pre-quantized checkpoints"),
        ("base+int8", "'base' cannot be combined"),
        ("int3", "unknown strategy"),
        ("int8+", "malformed"),
    ],
)
def test_nonsense_combinations_are_rejected(name, words):
    with pytest.raises(ConfigError, match=words):
        S.canonical(name)


def test_parse_checkpoints():
    assert S.parse_checkpoints(["awq=org/model-awq@abc", "gptq = ./dir "]) == {"awq": "org/model-awq@abc", "gptq": "./dir"}
    for bad, words in (("awq", "NAME=PATH"), ("int8=x", "only awq, gptq"), ("nope=x", "unknown strategy")):
        with pytest.raises(ConfigError, match=words):
            S.parse_checkpoints([bad])
    with pytest.raises(ConfigError, match="given twice"):
        S.parse_checkpoints(["awq=a", "awq=b"])


def test_prepare_fails_fast_with_readable_errors(tmp_path, monkeypatch):
    # awq without a checkpoint is built here with llm-compressor: without its environment, prepare says how to make it
    monkeypatch.setenv("BIASSHIFT_LLMC_PYTHON", str(tmp_path / "no-such-python"))
    with pytest.raises(ConfigError, match="BIASSHIFT_LLMC_PYTHON=.* is not an executable Python interpreter"):
        S.prepare(["base", "awq"], S.StrategySettings())
    monkeypatch.delenv("BIASSHIFT_LLMC_PYTHON")
    with pytest.raises(ConfigError, match="not in this run: gptq"):
        S.prepare(["base", "awq"], S.StrategySettings(checkpoints={"awq": "x", "gptq": "y"}))
    with pytest.raises(ConfigError, match="--calib-data"):
        S.prepare(["wanda"], S.StrategySettings(calib_data=str(tmp_path / "missing.txt")))
    ok = S.prepare(["base", "awq+kv4"], S.StrategySettings(checkpoints={"awq": "x"}))
    assert set(ok) == {"base", "awq+kv4"}


# ------------------------------------------------------------------------------------------ bitsandbytes
@needs_bnb
@pytest.mark.parametrize("name, kind", [("int8", "bnb_int8"), ("int4", "bnb_fp4"), ("nf4", "bnb_nf4")])
def test_bnb_variants(name, kind, spec, base_logits, tiny):
    import bitsandbytes as bnb

    base_model, _ = tiny
    v = S.get(name).build(spec)
    info = v.info
    # every decoder linear is a bitsandbytes module; lm_head, embeddings and norms stay in the run dtype
    layer = v.model.model.layers[0]
    cls = bnb.nn.Linear8bitLt if name == "int8" else bnb.nn.Linear4bit
    assert all(isinstance(m, cls) for m in (layer.self_attn.q_proj, layer.self_attn.o_proj, layer.mlp.down_proj))
    assert info["measured"]["linear_types"] == {kind: 14}
    assert info["measured"]["linear_outside_decoder_layers"] == ["lm_head"]
    assert type(v.model.lm_head) is torch.nn.Linear and v.model.lm_head.weight.dtype == torch.float32
    assert v.model.model.embed_tokens.weight.dtype == torch.float32
    assert v.model.model.norm.weight.dtype == torch.float32
    # footprint and storage
    assert info["memory_footprint_bytes"] < base_model.get_memory_footprint()
    bits = info["measured"]["bits_per_weight"]
    assert (8 < bits < 10) if name == "int8" else (4 <= bits < 5)
    # configuration recorded exactly
    qc = info["measured"]["quantization_config"]
    if name == "int8":
        assert qc["load_in_8bit"] and qc["llm_int8_threshold"] == 6.0
    else:
        assert qc["bnb_4bit_quant_type"] == ("fp4" if name == "int4" else "nf4")
        assert qc["bnb_4bit_use_double_quant"] is (name == "nf4")
        assert qc["bnb_4bit_compute_dtype"] == "float32" and info["config"]["bnb_4bit_compute_dtype"] == "float32"
    assert info["strategy"] == name and info["dtype"] == "float32" and info["notes"]
    # close to, but not equal to, the base model
    ids, lb = base_logits
    lv = logits_of(v, ids)
    assert float((lv - lb).abs().max()) > 1e-3
    assert corr(lv, lb) > (0.99 if name == "int8" else 0.5)
    assert kl(lb, lv) < (0.05 if name == "int8" else 1.5)


@needs_bnb
@pytest.mark.parametrize("name", ["int4", "nf4"])
def test_4bit_computes_in_the_run_dtype(name, spec):
    """Each 4-bit linear equals x @ dequantize(W).T in float32 (bitsandbytes' bf16 CPU kernel is not used)."""
    import bitsandbytes.functional as F

    v = S.get(name).build(spec)
    mod = v.model.model.layers[0].mlp.down_proj
    w = F.dequantize_4bit(mod.weight.data, mod.weight.quant_state).float()
    x = torch.randn(3, 5, mod.in_features, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        out = mod(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, x @ w.T, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------ Wanda + cache
def _row_sparsity(model):
    rows = []
    for layer in model.model.layers:
        for mod in layer.modules():
            if isinstance(mod, torch.nn.Linear):
                rows.append((mod.weight == 0).float().mean(dim=1))
    return torch.cat(rows)


@pytest.mark.parametrize("name", ["wanda", "wanda-2:4"])
def test_wanda_strategy_prunes_exactly_half(name, spec, settings, tiny):
    v = S.get(name, settings).build(spec)
    m = v.info["measured"]
    assert m["sparsity"] == 0.5 and m["linear_types"] == {"dense": 14}
    assert m["pruned_checkpoint_sparsity"]["overall"] == 0.5
    assert torch.equal(_row_sparsity(v.model), torch.full_like(_row_sparsity(v.model), 0.5))
    if name == "wanda-2:4":
        assert m["n_m_pattern_holds"] is True
        w = v.model.model.layers[1].mlp.up_proj.weight
        assert bool(((w.reshape(w.shape[0], -1, 4) == 0).sum(-1) == 2).all())
    cfg = v.info["config"]
    assert cfg["pattern"] == ("unstructured" if name == "wanda" else "2:4")
    assert cfg["calib_samples"] == 4 and cfg["calib_seqlen"] == 32 and cfg["seed"] == 0
    assert m["calibration"]["sha256"] and m["calibration"]["nsamples"] == 4
    # embeddings, norms and lm_head untouched
    base_model, _ = tiny
    assert torch.equal(v.model.lm_head.weight, base_model.lm_head.weight)
    assert torch.equal(v.model.model.embed_tokens.weight, base_model.model.embed_tokens.weight)


def test_variant_cache_hit_on_rebuild(spec, settings, tmp_path, monkeypatch):
    import biasshift.strategies.wanda as wanda_mod

    monkeypatch.setenv("BIASSHIFT_CACHE", str(tmp_path / "cache"))
    first = S.get("wanda", settings).build(spec)
    c1 = first.info["measured"]["cache"]
    assert c1["hit"] is False
    entry = tmp_path / "cache" / "variants" / c1["key"]
    assert (entry / "biasshift-variant.json").is_file() and list(entry.glob("*.safetensors"))
    assert len(c1["key"]) == 64

    def must_not_prune(*a, **k):
        raise AssertionError("pruned again although the variant is cached")

    monkeypatch.setattr(wanda_mod, "prune_wanda_", must_not_prune)
    second = S.get("wanda", settings).build(spec)
    c2 = second.info["measured"]["cache"]
    assert c2 == {**c1, "hit": True}
    assert second.info["timings"]["build_seconds"] < first.info["timings"]["build_seconds"]
    sd1, sd2 = first.model.state_dict(), second.model.state_dict()
    assert sd1.keys() == sd2.keys() and all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    # another setting is another entry
    other = S.StrategySettings(**{**settings.__dict__, "calib_samples": 3})
    with pytest.raises(AssertionError, match="pruned again"):
        S.get("wanda", other).build(spec)


def test_calibration_errors_are_readable(spec, tmp_path, monkeypatch):
    monkeypatch.setenv("BIASSHIFT_CACHE", str(tmp_path / "cache"))
    short = tmp_path / "short.txt"
    short.write_text("the man said yes")
    s = S.StrategySettings(calib_data=str(short), calib_samples=2, calib_seqlen=64)
    with pytest.raises(BiasshiftError, match="calibration data .* too short"):
        S.get("wanda", s).build(spec)
    assert not list((tmp_path / "cache" / "variants").glob("*"))  # nothing half-written stays behind


def test_c4_download_failure_is_readable(spec, tmp_path, monkeypatch):
    import biasshift.calibration as calibration

    def offline(**kwargs):
        assert kwargs["repo_id"] == "allenai/c4" and kwargs["repo_type"] == "dataset"  # the real download path
        raise OSError("network unreachable")

    monkeypatch.setenv("BIASSHIFT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(calibration, "hf_hub_download", offline)
    with pytest.raises(BiasshiftError, match="could not download the C4 calibration shard"):
        S.get("wanda-2:4", S.StrategySettings(calib_samples=2, calib_seqlen=16)).build(spec)


def test_calibration_length_is_capped_at_max_positions(spec, calib, tmp_path, monkeypatch):
    import biasshift.strategies.pruning as pruning

    monkeypatch.setenv("BIASSHIFT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(pruning, "max_positions", lambda path: 40)
    v = S.get("wanda", S.StrategySettings(calib_data=str(calib), calib_samples=2, calib_seqlen=2048)).build(spec)
    assert v.info["config"]["calib_seqlen"] == 40 and v.info["config"]["calib_seqlen_requested"] == 2048
    assert v.info["measured"]["calibration"]["seqlen"] == 40


@needs_bnb
def test_wanda_plus_int8_has_both(spec, settings):
    v = S.get("int8+wanda", settings).build(spec)
    info = v.info
    assert info["strategy"] == "wanda+int8" and info["components"] == ["wanda", "int8"]
    assert info["config"]["order"] == ["wanda", "int8"]
    assert info["config"]["wanda"]["pattern"] == "unstructured" and info["config"]["int8"]["llm_int8_threshold"] == 6.0
    m = info["measured"]
    assert m["int8"]["linear_types"] == {"bnb_int8": 14} and 8 < m["int8"]["bits_per_weight"] < 10
    assert m["wanda"]["pruned_checkpoint_sparsity"]["overall"] == 0.5
    assert m["wanda"]["sparsity"] >= 0.5  # pruned zeros stay zero after int8 quantization
    # the int8 model was quantized from the pruned checkpoint
    assert info["path"] == m["wanda"]["cache"]["path"]


# ------------------------------------------------------------------------------------------ checkpoints
def make_ct_checkpoint(src, out, symmetric=True, fmt="pack-quantized", group=16):
    """A compressed-tensors W4 (RTN) checkpoint of the tiny model, as llmcompressor would write it."""
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import (
        QuantizationArgs,
        QuantizationConfig,
        QuantizationScheme,
        QuantizationStatus,
        apply_quantization_config,
    )
    from compressed_tensors.quantization.utils import calculate_qparams
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    args = QuantizationArgs(num_bits=4, type="int", symmetric=symmetric, strategy="group", group_size=group)
    cfg = QuantizationConfig(config_groups={"group_0": QuantizationScheme(targets=["Linear"], weights=args)},
                             ignore=["lm_head"], quantization_status="calibration")
    apply_quantization_config(model, cfg)
    with torch.no_grad():
        for mod in model.modules():
            if hasattr(mod, "weight_scale"):
                g = mod.weight.reshape(mod.weight.shape[0], -1, group)
                scale, zp = calculate_qparams(g.amin(-1), g.amax(-1), args)
                mod.weight_scale.copy_(scale.reshape(mod.weight_scale.shape))
                if hasattr(mod, "weight_zero_point"):
                    mod.weight_zero_point.copy_(zp.reshape(mod.weight_zero_point.shape))
                mod.quantization_status = QuantizationStatus.FROZEN
    comp = ModelCompressor.from_pretrained_model(model, quantization_format=fmt)
    comp.compress_model(model)
    model.save_pretrained(out)
    comp.update_config(out)
    return out


needs_ct = pytest.mark.skipif(importlib.util.find_spec("compressed_tensors") is None,
                              reason="compressed-tensors not installed (pip install 'biasshift[checkpoints]')")


@needs_ct
def test_gptq_loads_a_compressed_tensors_checkpoint(spec, tiny_dir, tmp_path, base_logits):
    ck = make_ct_checkpoint(tiny_dir, tmp_path / "ck")
    v = S.get("gptq", S.StrategySettings(checkpoints={"gptq": str(ck)})).build(spec)
    info = v.info
    qc = info["measured"]["checkpoint_quantization_config"]
    assert qc["quant_method"] == "compressed-tensors" and qc["config_groups"]["group_0"]["weights"]["num_bits"] == 4
    assert info["config"]["checkpoint"] == str(ck) and info["config"]["fused_layers"] is False
    assert info["config"]["checkpoint_fingerprint"].startswith("dir-sha256:")
    assert info["measured"]["linear_types"] == {"compressed_tensors": 14}
    assert 4 < info["measured"]["bits_per_weight"] < 8
    assert any("recipe.yaml" in n for n in info["notes"])  # no recipe: the label cannot be verified
    ids, lb = base_logits
    lv = logits_of(v, ids)
    assert float((lv - lb).abs().max()) > 1e-3 and corr(lv, lb) > 0.5


@needs_ct
def test_checkpoint_problems_are_readable(spec, tiny_dir, tmp_path, monkeypatch):
    def run(name, path):
        return S.get(name, S.StrategySettings(checkpoints={name: str(path)})).build(spec)

    with pytest.raises(ConfigError, match="not quantized"):
        run("awq", tiny_dir)
    asym = make_ct_checkpoint(tiny_dir, tmp_path / "asym", symmetric=False)
    with pytest.raises(ConfigError, match="naive-quantized"):
        run("awq", asym)
    naive = make_ct_checkpoint(tiny_dir, tmp_path / "naive", symmetric=False, fmt="naive-quantized")
    assert run("awq", naive).info["measured"]["linear_types"] == {"int8_codes": 14}
    # a quantization of another model
    other = tmp_path / "other"
    shutil.copytree(naive, other)
    cfg = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 3}))
    with pytest.raises(ConfigError, match="not a quantization of the base model"):
        run("awq", other)
    # AutoAWQ / GPTQ formats need gptqmodel; the wrong label is refused
    autoawq = tmp_path / "autoawq"
    shutil.copytree(tiny_dir, autoawq)
    cfg = json.loads((autoawq / "config.json").read_text())
    (autoawq / "config.json").write_text(json.dumps({**cfg, "quantization_config": {"quant_method": "awq", "bits": 4}}))
    if importlib.util.find_spec("gptqmodel") is None:
        with pytest.raises(DependencyError, match="gptqmodel"):
            run("awq", autoawq)
    with pytest.raises(ConfigError, match="--strategy-checkpoint awq="):
        run("gptq", autoawq)
    # compressed-tensors missing
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "compressed_tensors" else real(n, *a))
    with pytest.raises(DependencyError, match="pip install compressed-tensors==0.20.0"):
        run("gptq", naive)
