"""KV-cache quantization: ``kv4`` / ``kv8`` (transformers ``QuantizedCache``, HQQ backend).

The reference (docs/strategies.md, KV-cache quantization) generated with ``cache_implementation="quantized"`` and the
QuantizedCacheConfig defaults of transformers 4.45: HQQ, axis_key = axis_value = 0,
q_group_size 64, residual_length 128.  transformers 5.23 has the same semantics in
``QuantizedCache(backend="hqq", ...)``:

* prefill: attention reads the *unquantized* prompt keys/values; the whole prompt is then stored
  quantized and the full-precision residual buffer starts empty;
* each decoding step reads the dequantized cache, the residual buffer (full precision) and the new
  token; when the buffer reaches ``residual_length`` tokens everything is re-quantized.

So the first generated token is never affected, and neither are scoring requests, unless
``--quantize-prompt-cache`` asks the engine to prefill the prompt minus its last token into the
quantized cache and score that token in one decoding step.  Base weights stay in the run dtype.
"""

from __future__ import annotations

import functools
import math
from typing import Any, ClassVar

from ..errors import ConfigError, DependencyError
from ..models import dtype_name
from .compose import BuildContext, KVStage, ServeOptions


def _require_hqq(strategy: str) -> None:
    try:
        import hqq  # noqa: F401
    except Exception as exc:
        raise DependencyError(
            f"strategy {strategy} quantizes the KV cache with the HQQ backend, but hqq could not be imported "
            f"({type(exc).__name__}: {exc}); install it with `pip install hqq==0.2.8.post1` (biasshift's optional extra 'quant')"
        ) from None


def kv_geometry(config: Any) -> tuple[int, int, int]:
    """(decoder layers, key/value heads, head dim) of a model config."""
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    heads = int(text.num_attention_heads)
    kv_heads = int(getattr(text, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(text, "head_dim", None) or text.hidden_size // heads)
    return int(text.num_hidden_layers), kv_heads, head_dim


def effective_group_size(width: int, requested: int) -> int:
    """HQQ groups the flattened [batch, kv_heads, tokens, head_dim] tensor and needs its size to be divisible
    by the group size.  With kv_heads * head_dim a multiple of the requested size (every real model we target)
    that always holds; otherwise the largest divisor of the requested size that always works is used."""
    return requested if width % requested == 0 else math.gcd(requested, width)


class _KV(KVStage):
    nbits: ClassVar[int]
    backend: ClassVar[str] = "hqq"  # lowercase: transformers 5 rejects "HQQ"
    axis_key: ClassVar[int] = 0
    axis_value: ClassVar[int] = 0
    q_group_size: ClassVar[int] = 64
    residual_length: ClassVar[int] = 128

    def config(self) -> dict[str, Any]:
        return {
            "implementation": "transformers QuantizedCache",
            "backend": self.backend,
            "nbits": self.nbits,
            "axis_key": self.axis_key,
            "axis_value": self.axis_value,
            "q_group_size": self.q_group_size,
            "residual_length": self.residual_length,
            "quantize_prompt_cache": self.settings.quantize_prompt_cache,
        }

    def validate(self) -> None:
        _require_hqq(self.spec_name)

    def scoring_equals_base(self) -> bool:
        # scoring requests never read a quantized cache unless --quantize-prompt-cache (module docstring)
        return not self.settings.quantize_prompt_cache

    def make_cache_factory(self, model: Any, ctx: BuildContext) -> Any:
        from transformers import QuantizedCache

        _require_hqq(self.name)
        layers, kv_heads, head_dim = kv_geometry(model.config)
        width = kv_heads * head_dim
        group = effective_group_size(width, self.q_group_size)
        if group != self.q_group_size:
            ctx.notes.append(
                f"{self.name}: q_group_size reduced from {self.q_group_size} to {group} because this model's "
                f"kv_heads x head_dim = {width} is not a multiple of {self.q_group_size}"
            )
        kwargs = dict(
            backend=self.backend,
            nbits=self.nbits,
            axis_key=self.axis_key,
            axis_value=self.axis_value,
            q_group_size=group,
            residual_length=self.residual_length,
        )
        try:
            QuantizedCache(config=model.config, **kwargs)  # fail now, not in the middle of a benchmark
        except ImportError as exc:
            raise DependencyError(f"strategy {self.name}: {exc}") from None
        except ValueError as exc:
            raise ConfigError(f"strategy {self.name} cannot be used with {type(model).__name__}: {exc}") from None
        ctx.resolved.setdefault(self.name, {}).update(q_group_size=group, compute_dtype=dtype_name(ctx.dtype))

        elsize = _elsize(ctx.dtype)
        per_token_fp = 2 * layers * width * elsize  # keys + values
        per_token_q = 2 * layers * (width * self.nbits / 8 + 2 * elsize * width / group)  # + scale, zero per group
        ctx.facts.setdefault(self.name, {}).update(
            kv_bytes_per_token_full_precision=per_token_fp,
            kv_bytes_per_token_quantized=round(per_token_q, 2),
            kv_compression=round(per_token_fp / per_token_q, 3),
            kv_layers=layers,
            kv_heads=kv_heads,
            head_dim=head_dim,
        )
        return functools.partial(QuantizedCache, config=model.config, **kwargs)

    def notes(self, ctx: BuildContext) -> list[str]:
        out = [
            f"{self.name}: generation reads the quantized prompt cache from the second generated token on; the "
            "first generated token comes from the unquantized prefill (as in the reference, docs/strategies.md, KV-cache quantization); new tokens "
            f"stay in full precision until {self.residual_length} of them have accumulated",
        ]
        if self.settings.quantize_prompt_cache:
            out.append(
                f"{self.name}: --quantize-prompt-cache: choice requests prefill the prompt minus its last token into "
                "the quantized cache and score the last token in one decoding step against it (docs/strategies.md, KV-cache quantization "
                "emulation); log-likelihood requests (CrowS-Pairs) use no cache and are unaffected"
            )
        else:
            out.append(
                "scoring benchmarks (loglik/choice) read the unquantized prompt cache and are unaffected unless "
                "--quantize-prompt-cache"
            )
        out.append(
            f"{self.name}: HQQ groups (axis 0) span the whole [batch, heads, tokens, head_dim] cache tensor, so a "
            "row's quantization depends on the other rows of its batch and on padding; --batch-size 1 reproduces "
            "the reference's one-prompt-at-a-time behaviour"
        )
        return out

    def serve(self, ctx: BuildContext, opts: ServeOptions) -> None:
        raise ConfigError(
            f"strategy {self.name} quantizes the KV cache with transformers' HQQ QuantizedCache, which vLLM does not "
            "have; with --engine vllm use kv-fp8 (vLLM's fp8 KV cache), or run kv4/kv8 with --engine hf"
        )


def _elsize(dtype: Any) -> int:
    import torch

    return torch.empty((), dtype=dtype).element_size()


class KV4(_KV):
    method = "kv4"
    description = "4-bit KV cache (transformers QuantizedCache, hqq, group 64, residual 128); weights as base"
    nbits = 4


class KV8(_KV):
    method = "kv8"
    description = "8-bit KV cache (transformers QuantizedCache, hqq, group 64, residual 128); weights as base"
    nbits = 8


_FP8_HF = "kv-fp8 is vLLM's fp8 KV cache; run it with --engine vllm"


class KVFP8(KVStage):
    """vLLM's fp8 KV cache (``kv_cache_dtype="fp8"``): only the vLLM engine can run it."""

    method = "kv-fp8"
    description = "fp8 KV cache of vLLM (kv_cache_dtype=fp8; --engine vllm only); weights as base"

    def config(self) -> dict[str, Any]:
        return {"implementation": "vLLM", "kv_cache_dtype": "fp8", "engine": "vllm"}

    def validate(self) -> None:
        if self.settings.engine is not None and self.settings.engine != "vllm":
            raise ConfigError(_FP8_HF)

    def make_cache_factory(self, model: Any, ctx: BuildContext) -> Any:
        raise ConfigError(_FP8_HF)

    def build(self, spec: Any) -> Any:
        raise ConfigError(_FP8_HF)

    def serve(self, ctx: BuildContext, opts: ServeOptions) -> None:
        opts.kv_cache_dtype = "fp8"

    def notes(self, ctx: BuildContext) -> list[str]:
        return [
            "kv-fp8: vLLM stores keys and values in fp8 (e4m3, scale 1.0 unless the checkpoint provides scales); "
            "prefill writes the prompt into that cache, so scoring requests can change too"
        ]
