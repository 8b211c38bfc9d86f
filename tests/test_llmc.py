"""GPTQ / AWQ built by biasshift with llmcompressor in its own environment (strategies/llmc.py, llmc_worker.py).

The builds need the llm-compressor environment (``make llmc-env`` -> .venv-llmc); without it they are
skipped with that reason. Settings, cache keys and error paths are tested without it.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from biasshift import strategies as S
from biasshift.errors import ConfigError
from biasshift.models import ModelSpec
from biasshift.strategies import llmc

LLMC_PY = Path(os.environ.get(llmc.ENV_VAR) or llmc.repo_root() / ".venv-llmc" / "bin" / "python")
needs_llmc = pytest.mark.skipif(
    not LLMC_PY.is_file(),
    reason=f"the llm-compressor environment {LLMC_PY} is absent (make llmc-env); GPTQ/AWQ builds not tested",
)
IDS = torch.tensor([[1, 5, 9, 33, 70, 100, 7, 8, 41, 12]])


# ----------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def tiny128(tmp_path_factory) -> Path:
    """A tiny random Llama whose linear input sizes (128, 256) are multiples of 128 (group size 128)."""
    from tiny import CORPUS, build_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = build_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, bos_token_id=1,
                      eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).eval()
    d = tmp_path_factory.mktemp("tiny128") / "model"
    model.save_pretrained(d)
    tok.save_pretrained(d)
    calib = d.parent / "calib.txt"
    calib.write_text("\n\n".join(" ".join(CORPUS[i:] + CORPUS[:i]) for i in range(len(CORPUS))))
    return d


def _settings(tiny128: Path, **kw) -> S.StrategySettings:
    return S.StrategySettings(calib_data=str(tiny128.parent / "calib.txt"), calib_samples=4, calib_seqlen=32, **kw)


def _spec(d: Path) -> ModelSpec:
    return ModelSpec(str(d), dtype="float32", device="cpu")


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits.float()


# ----------------------------------------------------------------------------------------------- settings
def test_settings_parse_and_canonicalise():
    assert S.parse_list("gptq@w4g128,awq@w4g64,gptq@w8g128") == ["base", "gptq@w4g128", "awq@w4g64", "gptq@w8g128"]
    assert S.canonical("gptq@W4G128") == "gptq@w4g128"
    g = S.get("gptq@w8g128")
    assert isinstance(g, llmc.LlmcGPTQ) and (g.params.bits, g.params.group_size) == (8, 128) and g.symmetric
    a = S.get("awq@w4g64")
    assert isinstance(a, llmc.LlmcAWQ) and (a.params.bits, a.params.group_size) == (4, 64) and not a.symmetric
    assert llmc.LlmcAWQ.Params().bits == 4 and llmc.LlmcAWQ.Params().group_size == 128  # default W4A16 g128
    cfg = S.get("awq@w4g64").config()
    assert cfg["scheme"] == "W4A16_ASYM" and cfg["format"] == "pack-quantized" and cfg["checkpoint"] is None
    assert S.canonical("awq@w4g64+kv4") == "awq@w4g64+kv4"
    with pytest.raises(ConfigError, match="cannot be quantized again"):
        S.canonical("gptq@w4g64+int8")


@pytest.mark.parametrize("name, words", [
    ("gptq@w3g7", ["gptq@w3g7", "bits", "3 bits is not supported", "group size 7 is not supported"]),
    ("awq@foo", ["awq@foo", "wBITSgGROUP", "awq@w4g128"]),
    ("awq@w4", ["wBITSgGROUP"]),
    ("gptq@w16g128", ["16 bits is not supported"]),
])
def test_bad_settings_are_clear(name, words):
    with pytest.raises(ConfigError) as e:
        S.parse_list(name)
    for w in words:
        assert w in str(e.value)


def test_missing_environment_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.delenv(llmc.ENV_VAR, raising=False)
    monkeypatch.setattr(llmc, "repo_root", lambda: tmp_path)
    with pytest.raises(ConfigError) as e:
        S.prepare(["base", "gptq@w4g128"], S.StrategySettings(calib_data="c4"))
    msg = str(e.value)
    assert str(tmp_path / ".venv-llmc" / "bin" / "python") in msg and "make llmc-env" in msg
    assert "pip install torch==2.13.0" in msg and "llmcompressor==0.14.0.1" in msg
    monkeypatch.setenv(llmc.ENV_VAR, str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="BIASSHIFT_LLMC_PYTHON=.*not an executable"):
        S.prepare(["base", "awq@w4g64"], S.StrategySettings(calib_data="c4"))
    # a published checkpoint needs no environment (checked when it is loaded)
    S.prepare(["base", "awq@w4g64"], S.StrategySettings(checkpoints={"awq@w4g64": "./somewhere"}))


def _ctx(base: Path, fingerprint: str = "dir-sha256:abc") -> SimpleNamespace:
    return SimpleNamespace(base_path=base, model_info={"fingerprint": fingerprint}, spec=SimpleNamespace(source=str(base)))


def test_cache_key_follows_settings_and_calibration(tiny_dir, tmp_path):
    c1, c2 = tmp_path / "a.txt", tmp_path / "b.txt"
    c1.write_text("one document\n\nanother one")
    c2.write_text("one document\n\nanother one!")
    ctx = _ctx(tiny_dir)

    def key(name, calib=c1, ctx=ctx, **kw):
        st = S.StrategySettings(calib_data=str(calib), **kw)
        return llmc.varcache.variant_key(S.get(name, st)._material(ctx, "0.14.0.1"))

    k = key("gptq@w4g128")
    assert key("gptq@w4g128") == k
    others = [key("gptq@w8g128"), key("gptq@w4g64"), key("awq@w4g128"), key("gptq@w4g128", calib=c2),
              key("gptq@w4g128", calib_samples=64), key("gptq@w4g128", seed=1),
              key("gptq@w4g128", ctx=_ctx(tiny_dir, "dir-sha256:other"))]
    assert len({k, *others}) == len(others) + 1
    m = S.get("gptq@w4g128", S.StrategySettings(calib_data=str(c1)))._material(ctx, "0.14.0.1")
    assert m["calib"] == {"source": "file", "sha256": hashlib.sha256(c1.read_bytes()).hexdigest()}
    assert m["calib_seqlen"] == 512  # 2048 capped at the tiny model's max_position_embeddings


def test_group_size_must_divide_the_linears(tiny_dir):
    # tests/tiny.py: hidden 32, intermediate 64
    with pytest.raises(ConfigError) as e:
        S.get("gptq@w4g64")._check_group_size(_ctx(tiny_dir))
    msg = str(e.value)
    assert "group size 64 does not divide" in msg and "q_proj (32)" in msg and "down_proj" not in msg
    assert "gptq@w4g32" in msg
    S.get("gptq@w4g32")._check_group_size(_ctx(tiny_dir))


def test_worker_failure_shows_the_log_tail(tiny128, tmp_path, monkeypatch):
    fake = tmp_path / "fakepython"
    fake.write_text("#!/bin/sh\nif [ \"$1\" = -c ]; then echo 9.9-fake; exit 0; fi\n"
                    "echo 'step one'; echo 'Traceback: something broke' >&2; exit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv(llmc.ENV_VAR, str(fake))
    with pytest.raises(llmc.BuildError) as e:
        S.get("gptq@w4g128", _settings(tiny128)).build(_spec(tiny128))
    msg = str(e.value)
    assert "exit status 3" in msg and "step one" in msg and "something broke" in msg
    log = Path(msg.split("full log ")[1].split(")")[0])
    assert "something broke" in log.read_text()
    assert not [p for p in llmc.varcache.variants_root().iterdir() if ".partial-" in p.name]  # nothing half-written


# ----------------------------------------------------------------------------------------------- builds
def _unpack4(words: np.ndarray, n: int) -> np.ndarray:
    """int32 words, 8 four-bit values each, lowest bits first, stored with +8 offset -> signed values."""
    u = words.astype(np.int64) & 0xFFFFFFFF
    nib = (u[:, :, None] >> (4 * np.arange(8))) & 0xF
    return nib.reshape(words.shape[0], -1)[:, :n] - 8


def _reference_model(ckpt: Path, base: Path, group: int):
    """The built checkpoint dequantized here with numpy, loaded into a plain model of the base architecture."""
    from safetensors.numpy import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    t = load_file(str(ckpt / "model.safetensors"))
    state = {}
    for k, v in t.items():
        if k.endswith(".weight_packed"):
            p = k[: -len(".weight_packed")]
            out, cols = (int(x) for x in t[p + ".weight_shape"])
            q = _unpack4(v, cols)
            scale = t[p + ".weight_scale"].astype(np.float64)
            zp = _unpack4(t[p + ".weight_zero_point"].T, out).T if p + ".weight_zero_point" in t else 0 * scale
            g = np.arange(cols) // group
            state[p + ".weight"] = torch.from_numpy(((q - zp[:, g]) * scale[:, g]).astype(np.float32))
        elif not any(k.endswith(s) for s in (".weight_scale", ".weight_zero_point", ".weight_shape")):
            state[k] = torch.from_numpy(v.copy())
    ref = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(base), dtype=torch.float32).eval()
    missing, unexpected = ref.load_state_dict(state, strict=False)
    assert not unexpected and all("rotary" in m for m in missing), (missing, unexpected)
    return ref


@needs_llmc
@pytest.mark.parametrize("method, bpw", [("gptq", 4 + 32 / 128), ("awq", 4 + 32 / 128 + 4 / 128)])
def test_build_loads_and_matches_an_independent_dequantization(method, bpw, tiny128):
    """W4 g128 on a float32 model: 4 bits + one float32 scale per 128 weights (+ a 4-bit zero point for AWQ)."""
    from transformers import AutoModelForCausalLM

    name = f"{method}@w4g128"
    v = S.get(name, _settings(tiny128)).build(_spec(tiny128))
    info = v.info
    m = info["measured"]
    assert m["cache"]["hit"] is False
    assert m["checkpoint_bits_per_weight"] == pytest.approx(bpw, abs=1e-6)
    assert m["bits_per_weight"] == pytest.approx(bpw, abs=1e-4)  # as loaded (linear_report rounds to 4 places)
    assert m["checkpoint_bits"]["n_quantized_linears"] == 14  # 7 per layer, lm_head left out
    assert m["build"]["llmcompressor_version"] == llmc.LLMC_VERSION and m["build_seconds"] > 0
    assert (method.upper() + "Modifier") in m["recipe_modifiers"]
    calib = tiny128.parent / "calib.txt"
    assert m["calibration"]["sha256"] == hashlib.sha256(calib.read_bytes()).hexdigest()
    assert m["calibration"]["nsamples"] == 4 and m["calibration"]["seqlen"] == 32
    cfg = info["config"]
    assert (cfg["method"], cfg["bits"], cfg["group_size"], cfg["symmetric"]) == (method, 4, 128, method == "gptq")
    assert cfg["checkpoint_format"] == "compressed-tensors" and cfg["llmcompressor_version"] == llmc.LLMC_VERSION
    qc = m["checkpoint_quantization_config"]["config_groups"]["group_0"]["weights"]
    assert (qc["num_bits"], qc["group_size"], qc["symmetric"]) == (4, 128, method == "gptq")

    lv = _logits(v.model)
    ref = _reference_model(Path(m["cache"]["path"]), tiny128, 128)
    assert torch.allclose(lv, _logits(ref), atol=1e-4), float((lv - _logits(ref)).abs().max())
    base = _logits(AutoModelForCausalLM.from_pretrained(tiny128, dtype=torch.float32).eval())
    d = float((lv - base).abs().max())
    assert 1e-4 < d < float(base.abs().max())  # quantized: changed, but not destroyed
    # every group of every quantized linear holds at most 16 distinct values
    w = ref.model.layers[0].mlp.down_proj.weight.reshape(-1, 128)
    assert max(len(torch.unique(r)) for r in w) <= 16

    # a rerun finds the cache entry and runs no worker
    again = S.get(name, _settings(tiny128)).build(_spec(tiny128))
    assert again.info["measured"]["cache"] == {**m["cache"], "hit": True}
    assert torch.equal(_logits(again.model), lv)

    # the built directory loads as a published checkpoint, without a build, under the same setting ...
    path = m["cache"]["path"]
    if method == "awq":
        # (user-given asymmetric pack-quantized checkpoints are still refused: the zero-point fix of
        # checkpoint.fix_ct_packed_zero_points is applied to biasshift's own builds only)
        with pytest.raises(ConfigError, match="naive-quantized"):
            S.get(name, _settings(tiny128, checkpoints={name: path})).build(_spec(tiny128))
        return
    pub = S.get(name, _settings(tiny128, checkpoints={name: path})).build(_spec(tiny128))
    assert pub.info["config"]["checkpoint"] == path and "cache" not in pub.info["measured"]
    assert torch.allclose(_logits(pub.model), lv, atol=1e-6)
    # ... and is refused under another one
    with pytest.raises(ConfigError, match="holds w4g128, not w8g128"):
        S.get(f"{method}@w8g128", _settings(tiny128, checkpoints={f"{method}@w8g128": path})).build(_spec(tiny128))


@needs_llmc
def test_worker_refuses_a_group_size_that_does_not_divide(tiny_dir, tmp_path):
    import subprocess

    calib = tmp_path / "c.jsonl"
    calib.write_text(json.dumps({"input_ids": [3, 4, 5, 6]}) + "\n")
    r = subprocess.run([str(LLMC_PY), str(llmc.WORKER), "--model", str(tiny_dir), "--out", str(tmp_path / "o"),
                        "--method", "gptq", "--group-size", "64", "--calib", str(calib), "--samples", "1",
                        "--seqlen", "4"], capture_output=True, text=True, env=llmc._worker_env(), timeout=600)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "group size 64 does not divide" in r.stderr and "q_proj (32)" in r.stderr
    assert not (tmp_path / "o" / "config.json").exists()
    assert sys.executable != str(LLMC_PY)
