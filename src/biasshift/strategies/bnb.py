"""bitsandbytes weight quantization: ``int8`` (LLM.int8()), ``int4`` (FP4, the reference's INT4), ``nf4``.

Weights are quantized on the fly while the dense checkpoint (the base model, or a cached pruned
checkpoint) is loaded.  Every module that bitsandbytes does not replace (embeddings, norms,
``lm_head``) is loaded in the run dtype, and the 4-bit compute dtype is the run dtype, so the
variant differs from the base only by the quantization (docs/strategies.md, Rules shared by every variant; the reference mixed fp16
modules with bf16 compute).

4-bit models are never written to disk: bitsandbytes 4-bit save/reload gives wrong weights on CPU
(feasibility notes), and quantizing on load takes seconds.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from ..errors import ConfigError, DependencyError
from .compose import BuildContext, ServeOptions, WeightsStage
from .measure import _bnb_types, linear_report

_INSTALL = "install it with `pip install bitsandbytes==0.50.2` (biasshift's optional extra 'quant')"


class _DropCastWarning(logging.Filter):
    """bitsandbytes logs 'inputs will be cast ... to float16' on *every* int8 matmul; recorded once in notes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "inputs will be cast" not in record.getMessage()


class _KernelsNotice(logging.Filter):
    """bitsandbytes 0.50 on AVX512-BF16 CPUs logs, at import, that the optional hub kernel package
    ``kernels`` is missing (then it uses its own CPU code): kept out of the console, one line in notes."""

    seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if "kernels-community" in record.getMessage():
            _KernelsNotice.seen = True
            return False
        return True


def _require_bnb(strategy: str) -> None:
    logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_KernelsNotice())
    try:
        import bitsandbytes  # noqa: F401
    except Exception as exc:  # ImportError or a failing native library
        raise DependencyError(
            f"strategy {strategy} needs bitsandbytes, which could not be imported ({type(exc).__name__}: {exc}); "
            f"{_INSTALL}"
        ) from None


class _Bnb(WeightsStage):

    def validate(self) -> None:
        _require_bnb(self.spec_name)

    def quantization_config(self, ctx: BuildContext) -> Any:
        raise NotImplementedError

    def load_kwargs(self, ctx: BuildContext) -> dict[str, Any]:
        _require_bnb(self.name)
        qc = self.quantization_config(ctx)
        ctx.facts.setdefault(self.name, {})["quantization_config"] = _qc_dict(qc)
        return {"quantization_config": qc}

    def measure(self, model: Any, ctx: BuildContext) -> dict[str, Any]:
        return linear_report(model)

    def serve(self, ctx: BuildContext, opts: ServeOptions) -> None:
        raise ConfigError(
            f"strategy {self.name} cannot be served by vLLM: vLLM's bitsandbytes support loads 4-bit NF4 only "
            "(use nf4 with --engine vllm, or run this strategy with --engine hf)"
        )


def _qc_dict(qc: Any) -> dict[str, Any]:
    d = qc.to_dict()
    return {k: (str(v).removeprefix("torch.") if not isinstance(v, (int, float, str, bool, type(None), list, dict)) else v)
            for k, v in d.items()}


class Int8(_Bnb):
    method = "int8"
    description = "bitsandbytes LLM.int8(): int8 weights, fp16 outlier decomposition above threshold 6.0"

    def config(self) -> dict[str, Any]:
        return {
            "library": "bitsandbytes",
            "method": "LLM.int8()",
            "load_in_8bit": True,
            "llm_int8_threshold": 6.0,
            "llm_int8_has_fp16_weight": False,
            "not_quantized": "lm_head (transformers default), embeddings, norms",
        }

    def quantization_config(self, ctx: BuildContext) -> Any:
        from transformers import BitsAndBytesConfig

        log = logging.getLogger("bitsandbytes.autograd._functions")
        if not any(isinstance(f, _DropCastWarning) for f in log.filters):
            log.addFilter(_DropCastWarning())
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=6.0, llm_int8_has_fp16_weight=False)

    def notes(self, ctx: BuildContext) -> list[str]:
        return [
            "int8: LLM.int8() casts the activations entering every quantized linear to float16 for the int8 "
            "matmul (columns with outliers above 6.0 run in float16); that is part of the method"
        ]


class _FourBit(_Bnb):
    quant_type: ClassVar[str]
    double_quant: ClassVar[bool]

    def config(self) -> dict[str, Any]:
        return {
            "library": "bitsandbytes",
            "load_in_4bit": True,
            "bnb_4bit_quant_type": self.quant_type,
            "bnb_4bit_use_double_quant": self.double_quant,
            "bnb_4bit_compute_dtype": "the run dtype",
            "bnb_4bit_quant_storage": "uint8",
            "blocksize": 64,
            "not_quantized": "lm_head (transformers default), embeddings, norms",
        }

    def quantization_config(self, ctx: BuildContext) -> Any:
        from transformers import BitsAndBytesConfig

        from ..models import dtype_name

        ctx.resolved.setdefault(self.name, {})["bnb_4bit_compute_dtype"] = dtype_name(ctx.dtype)
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=self.quant_type,
            bnb_4bit_use_double_quant=self.double_quant,
            bnb_4bit_compute_dtype=ctx.dtype,
            bnb_4bit_quant_storage="uint8",
        )

    def after_load(self, model: Any, ctx: BuildContext) -> None:
        # On CPUs with AVX512-BF16, bitsandbytes 0.50 repacks 4-bit weights on the first no-grad forward and
        # then computes in bfloat16 whatever the compute dtype (and needs in_features % blocksize == 0 and
        # out_features % 32 == 0, else it crashes).  Keep it only when the run dtype is bfloat16 anyway.
        import torch

        _, four = _bnb_types()
        if four is None:
            return
        keep = ctx.device.type == "cpu" and ctx.dtype == torch.bfloat16
        used = off = 0
        for mod in model.modules():
            if not isinstance(mod, four) or not getattr(mod, "support_avx512bf16_for_cpu", False):
                continue
            qs = mod.weight.quant_state
            n, k = (int(x) for x in qs.shape)
            if keep and k % qs.blocksize == 0 and n % 32 == 0:
                used += 1
            else:
                mod.support_avx512bf16_for_cpu = False
                off += 1
        ctx.resolved.setdefault(self.name, {})["cpu_bf16_kernel_modules"] = used
        if off:
            ctx.notes.append(
                f"{self.name}: bitsandbytes' AVX512-BF16 CPU kernel (which computes in bfloat16) was disabled for "
                f"{off} linear layers so that they compute in the run dtype {ctx.dtype}".replace("torch.", "")
            )

    def notes(self, ctx: BuildContext) -> list[str]:
        return [
            f"{self.name}: 4-bit weights are quantized on every load and kept in memory only (bitsandbytes "
            "4-bit save/reload is unreliable on CPU)"
        ]


class Int4(_FourBit):
    method = "int4"
    description = "bitsandbytes 4-bit FP4, no double quantization (the reference's INT4), compute in the run dtype"
    quant_type = "fp4"
    double_quant = False

    def notes(self, ctx: BuildContext) -> list[str]:
        return super().notes(ctx) + [
            "int4 reproduces the reference's INT4 format (FP4, no double quantization, docs/strategies.md, bitsandbytes); the reference "
            "computed in bf16 with fp16 non-quantized modules, here both are the run dtype"
        ]


class NF4(_FourBit):
    method = "nf4"
    description = "bitsandbytes 4-bit NF4 with double quantization (not in the reference), compute in the run dtype"
    quant_type = "nf4"
    double_quant = True

    def notes(self, ctx: BuildContext) -> list[str]:
        return super().notes(ctx) + [
            "nf4 is not the reference's INT4 (that is `int4`, FP4); NF4 + double quantization is the usual better "
            "4-bit bitsandbytes setting (repository B's nf4 mode)"
        ]

    def serve(self, ctx: BuildContext, opts: ServeOptions) -> None:
        # vLLM quantizes the dense checkpoint in flight (quantization="bitsandbytes": NF4 4-bit)
        opts.quantization = "bitsandbytes"
