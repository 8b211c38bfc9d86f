"""KV-cache strategies (kv4, kv8): where they change the answers, and --quantize-prompt-cache."""

from __future__ import annotations

import importlib.util

import pytest

from biasshift import strategies as S
from biasshift.engine.hf import HFEngine
from biasshift.engine.requests import ChoiceRequest, GenerateRequest, Keyed, LoglikRequest, answer_to_dict
from biasshift.models import ModelSpec
from biasshift.strategies.kvcache import effective_group_size, kv_geometry

pytestmark = pytest.mark.skipif(importlib.util.find_spec("hqq") is None, reason="hqq not installed")

PROMPTS = [
    'Please answer the above question with either "yes" or "no".\n\nMy answer would be "',
    "Answer: ",
    "The doctor said yes, the nurse said",
    'Is this good? "',
    "If had to select one of the options, my answer would be (A) Very good (B) Bad\n\nAnswer (",
    "The man and the woman went to the market. The doctor said",
]
CHOICES = [Keyed(f"c{i}", f"c{i}", ChoiceRequest(p, ("yes", "no"))) for i, p in enumerate(PROMPTS)] + [
    Keyed(f"a{i}", f"a{i}", ChoiceRequest(p, ("A", "B", "C"), policy="space")) for i, p in enumerate(PROMPTS)
]


def gens(n):
    return [Keyed(f"g{n}-{i}", f"g{i}", GenerateRequest(p, n)) for i, p in enumerate(PROMPTS)]


def run(variant, reqs, batch_size=1, **kw):
    kw.setdefault("cache_factory", variant.cache_factory)
    kw.setdefault("quantize_prompt_cache", variant.quantize_prompt_cache)
    eng = HFEngine(variant.model, variant.tokenizer, batch_size=batch_size, **kw)
    out = {}
    # answers are typed objects; the assertions below read their JSON form
    eng.run(reqs, lambda rs: out.update({k.key: r if isinstance(r, dict) else answer_to_dict(r) for k, r in rs}))
    return out


@pytest.fixture(scope="module")
def spec(tiny_dir):
    return ModelSpec(str(tiny_dir), dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def base(spec):
    return S.get("base").build(spec)


@pytest.fixture(scope="module")
def base_answers(base):
    return run(base, CHOICES + gens(1) + gens(16))


def max_raw_diff(a, b):
    return max(abs(a[k]["raw"][lab] - b[k]["raw"][lab]) for k in a if k in b and "raw" in a[k] for lab in a[k]["raw"])


@pytest.mark.parametrize("name, nbits", [("kv4", 4), ("kv8", 8)])
def test_kv_variant_config(name, nbits, spec, base):
    v = S.get(name).build(spec)
    cfg = v.info["config"]
    assert cfg["backend"] == "hqq" and cfg["nbits"] == nbits
    assert (cfg["axis_key"], cfg["axis_value"], cfg["residual_length"]) == (0, 0, 128)
    # the tiny model's kv_heads x head_dim = 16 is not a multiple of 64: the reduction is recorded
    assert cfg["q_group_size"] == 16 and any("q_group_size reduced from 64 to 16" in n for n in v.info["notes"])
    assert any("unaffected unless --quantize-prompt-cache" in n for n in v.info["notes"])
    assert v.quantize_prompt_cache is False and cfg["quantize_prompt_cache"] is False
    assert v.info["memory_footprint_bytes"] == base.info["memory_footprint_bytes"]  # weights as base
    assert v.info["measured"]["kv_compression"] > 1
    cache = v.cache_factory()
    assert type(cache).__name__ == "QuantizedCache"
    assert type(cache.layers[0]).__name__ == "HQQQuantizedLayer" and cache.layers[0].nbits == nbits
    assert v.cache_factory() is not cache  # a fresh cache per batch


def test_group_size_rule():
    assert effective_group_size(8 * 128, 64) == 64  # Llama / Mistral
    assert effective_group_size(3 * 64, 64) == 64  # SmolLM2-135M
    assert effective_group_size(16, 64) == 16
    assert effective_group_size(2 * 24, 64) == 16

    class Cfg:
        num_attention_heads, num_key_value_heads, hidden_size, num_hidden_layers, head_dim = 32, 8, 4096, 32, None

    assert kv_geometry(Cfg()) == (32, 8, 128)


def test_kv4_changes_generation_only_after_the_first_token(spec, base, base_answers):
    v = S.get("kv4").build(spec)
    res = run(v, CHOICES + gens(1) + gens(16))
    # one new token comes from the unquantized prefill: identical to base, whatever the prompt
    one = [k for k in res if k.startswith("g1-")]
    assert len(one) == len(PROMPTS) and all(res[k] == base_answers[k] for k in one)
    # longer generations read the quantized prompt cache from the second token on
    long_ = [k for k in res if k.startswith("g16-")]
    differ = [k for k in long_ if res[k]["samples"][0]["text"] != base_answers[k]["samples"][0]["text"]]
    assert differ, "kv4 should change some 16-token greedy generation on the tiny model"
    # ... and the first generated token is still the base model's (the texts share their first character)
    assert all(res[k]["samples"][0]["text"][:1] == base_answers[k]["samples"][0]["text"][:1] for k in long_)
    # scoring does not read a quantized cache without --quantize-prompt-cache: exactly the base answers
    assert all(res[k] == base_answers[k] for k in res if k[0] in "ca")


def test_two_step_scoring_path_is_exact_without_quantization(base, base_answers):
    from transformers import DynamicCache

    res = run(base, CHOICES, batch_size=4, cache_factory=DynamicCache, quantize_prompt_cache=True)
    assert max_raw_diff(res, base_answers) < 1e-6


def test_quantize_prompt_cache_changes_choice_probabilities_slightly(spec, base, base_answers):
    s = S.StrategySettings(quantize_prompt_cache=True)
    diffs = {}
    for name in ("kv4", "kv8"):
        v = S.get(name, s).build(spec)
        assert v.quantize_prompt_cache is True and v.info["config"]["quantize_prompt_cache"] is True
        assert any("--quantize-prompt-cache: choice requests" in n for n in v.info["notes"])
        res = run(v, CHOICES)
        diffs[name] = max_raw_diff(res, base_answers)
        # log-likelihood requests use no cache: unaffected
        ll = [Keyed("l", "l", LoglikRequest("", "The doctor said yes."))]
        assert run(v, ll) == run(base, ll)
    assert 1e-5 < diffs["kv4"] < 0.05
    assert 0 < diffs["kv8"] < diffs["kv4"]


def test_kv_on_top_of_a_weight_quantizer(spec):
    pytest.importorskip("bitsandbytes")
    v = S.get("kv4+int4").build(spec)
    assert v.info["components"] == ["int4", "kv4"] and v.cache_factory is not None
    assert v.info["measured"]["int4"]["linear_types"] == {"bnb_fp4": 14}
    res = run(v, gens(4))
    assert all(r["samples"][0]["n_tokens"] >= 0 for r in res.values())


def test_quantized_cache_is_refused_for_sliding_window_models(tmp_path):
    from transformers import MistralConfig, MistralForCausalLM

    from tiny import build_tokenizer

    from biasshift.errors import ConfigError

    tok = build_tokenizer()
    cfg = MistralConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                        num_attention_heads=4, num_key_value_heads=2, sliding_window=16)
    MistralForCausalLM(cfg).save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    with pytest.raises(ConfigError, match="kv4 cannot be used"):
        S.get("kv4").build(ModelSpec(str(tmp_path / "m"), dtype="float32", device="cpu"))
