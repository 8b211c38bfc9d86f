"""Building a variant from one strategy or a composition of strategies (``wanda+int8``).

Order of application (one strategy per stage at most):

1. ``prune``: the base model is pruned in float32 and the pruned dense checkpoint is cached on
   disk (:mod:`.varcache`);
2. ``checkpoint``: a pre-quantized checkpoint replaces the weights (cannot follow pruning);
3. ``weights``: the dense checkpoint from 1 (or the base checkpoint) is loaded with a
   quantization config (bitsandbytes);
4. ``kv``: a quantized KV cache is attached as ``Variant.cache_factory``.

Every module that is not quantized is loaded in the run's single dtype (spec §4.7).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..models import ModelSpec, dtype_name, load_tokenizer, materialise, resolve_device, resolve_dtype
from ..models import load_weights
from .base import Strategy, StrategySettings, Variant, footprint_bytes

STAGE_ORDER = ("prune", "checkpoint", "weights", "kv")


@dataclass
class BuildContext:
    """What the stages of one build share."""

    spec: ModelSpec
    settings: StrategySettings
    device: Any
    dtype: Any
    base_path: Path
    model_info: dict[str, Any]
    tokenizer: Any
    #: per strategy name: settings resolved while building (recorded in ``info["config"]``)
    resolved: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: per strategy name: facts found while preparing (recorded in ``info["measured"]``)
    facts: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def logical_n_parameters(model: Any) -> int:
    """Number of parameters as in the dense model (packed 4-bit tensors counted by their logical shape)."""
    total = 0
    for mod in model.modules():
        for name, p in mod.named_parameters(recurse=False):
            qs = getattr(p, "quant_state", None)
            if qs is not None and getattr(qs, "shape", None) is not None:
                n = 1
                for s in qs.shape:
                    n *= int(s)
                total += n
            elif name == "weight_packed" and getattr(mod, "weight_shape", None) is not None:
                n = 1
                for s in mod.weight_shape.tolist():
                    n *= int(s)
                total += n
            elif name in ("weight_scale", "weight_zero_point", "weight_shape", "weight_g_idx"):
                continue
            else:
                total += p.numel()
    return total


def build_parts(name: str, parts: list[Strategy], spec: ModelSpec, settings: StrategySettings) -> Variant:
    t0 = time.perf_counter()
    device = resolve_device(spec.device)
    dtype = resolve_dtype(spec.dtype, device)
    base_path, model_info = materialise(spec)
    tok = load_tokenizer(base_path, spec)
    ctx = BuildContext(spec, settings, device, dtype, base_path, model_info, tok)
    by_stage = {p.stage: p for p in parts}

    source = base_path
    for stage in ("prune", "checkpoint"):
        part = by_stage.get(stage)
        if part is not None:
            ts = time.perf_counter()
            source = part.prepare(ctx)  # type: ignore[attr-defined]
            ctx.timings[f"{part.name}_prepare_seconds"] = round(time.perf_counter() - ts, 3)

    load_kwargs: dict[str, Any] = {}
    wq = by_stage.get("weights")
    if wq is not None:
        load_kwargs.update(wq.load_kwargs(ctx))  # type: ignore[attr-defined]
    ts = time.perf_counter()
    model = load_weights(source, spec, **load_kwargs)
    ctx.timings["load_seconds"] = round(time.perf_counter() - ts, 3)
    for part in parts:
        part.after_load(model, ctx)  # type: ignore[attr-defined]
    footprint = footprint_bytes(model)  # before any forward (compressed-tensors decompresses on the first)

    cache_factory = None
    kv = by_stage.get("kv")
    if kv is not None:
        cache_factory = kv.make_cache_factory(model, ctx)  # type: ignore[attr-defined]

    measured: dict[str, dict[str, Any]] = {}
    for part in parts:
        measured[part.name] = {**ctx.facts.get(part.name, {}), **part.measure(model, ctx)}  # type: ignore[attr-defined]
    configs = {part.name: {**part.config(), **ctx.resolved.get(part.name, {})} for part in parts}
    notes: list[str] = []
    for part in parts:
        notes.extend(part.notes(ctx))  # type: ignore[attr-defined]
    notes.extend(ctx.notes)
    notes.append(
        f"every module that is not quantized runs in the run dtype {dtype_name(dtype)} (one dtype for all "
        "variants, spec §4.7)"
    )
    ctx.timings["build_seconds"] = round(time.perf_counter() - t0, 3)

    single = len(parts) == 1
    info: dict[str, Any] = {
        **model_info,
        "path": str(source),
        "dtype": dtype_name(dtype),
        "device": str(device),
        "architecture": type(model).__name__,
        "n_parameters": logical_n_parameters(model),
        "trust_remote_code": spec.trust_remote_code,
        "chat_template": bool(getattr(tok, "chat_template", None)),
        "strategy": name,
        "components": [p.name for p in parts],
        "config": configs[parts[0].name] if single else {"order": [p.name for p in parts], **configs},
        "requested": {"strategy": name, "config": {p.name: p.requested()["config"] for p in parts}}
        if not single
        else parts[0].requested(),
        "memory_footprint_bytes": footprint,
        "measured": measured[parts[0].name] if single else measured,
        "notes": notes,
        "timings": ctx.timings,
    }
    return Variant(
        name,
        model,
        tok,
        info,
        cache_factory=cache_factory,
        quantize_prompt_cache=bool(kv is not None and settings.quantize_prompt_cache),
    )


class Stage(Strategy):
    """A strategy that takes part in :func:`build_parts`; subclasses override the hooks of their stage."""

    def build(self, spec: ModelSpec) -> Variant:
        return build_parts(self.spec_name, [self], spec, self.settings)

    def after_load(self, model: Any, ctx: BuildContext) -> None:
        """Adjust the loaded model (runs before it is measured or used)."""

    def measure(self, model: Any, ctx: BuildContext) -> dict[str, Any]:
        return {}

    def notes(self, ctx: BuildContext) -> list[str]:
        return []


class Composite(Strategy):
    """``a+b``: the parts' stages applied in :data:`STAGE_ORDER` (validated by the registry)."""

    name = "composite"
    description = "a combination of strategies"
    stage = "composite"

    def __init__(self, spec_name: str, parts: list[Strategy], settings: StrategySettings | None = None) -> None:
        super().__init__(spec_name, settings)
        self.parts = parts

    def config(self) -> dict[str, Any]:
        return {p.name: p.config() for p in self.parts}

    def requested(self) -> dict[str, Any]:
        return {"strategy": self.spec_name, "config": {p.name: p.requested()["config"] for p in self.parts}}

    def validate(self) -> None:
        for p in self.parts:
            p.validate()

    def scoring_equals_base(self) -> bool:
        return all(p.scoring_equals_base() for p in self.parts)

    def build(self, spec: ModelSpec) -> Variant:
        return build_parts(self.spec_name, self.parts, spec, self.settings)
