"""Building a variant from one strategy or a composition of strategies (``wanda+int8``).

Order of application (one strategy per stage at most):

1. ``prune``: the base model is pruned in float32 and the pruned dense checkpoint is cached on
   disk (:mod:`.varcache`);
2. ``checkpoint``: a pre-quantized checkpoint replaces the weights (cannot follow pruning);
3. ``weights``: the dense checkpoint from 1 (or the base checkpoint) is loaded with a
   quantization config (bitsandbytes);
4. ``kv``: a quantized KV cache is attached as ``Variant.cache_factory``.

Every module that is not quantized is loaded in the run's single dtype (docs/strategies.md, Rules shared by every variant).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from ..models import ModelSpec, dtype_name, load_tokenizer, materialise, resolve_device, resolve_dtype
from ..models import load_weights
from ..errors import ConfigError
from .base import ServedVariant, Strategy, StrategySettings, Variant, footprint_bytes

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


# ------------------------------------------------------------------------------------------ typed stages
@runtime_checkable
class SourceHook(Protocol):
    """A prune or checkpoint stage: returns the model directory that the later stages load."""

    def prepare(self, ctx: BuildContext) -> Path: ...


@dataclass
class ServeOptions:
    """What the stages of an export decide for the serving engine (see :class:`ServedVariant`)."""

    quantization: str | None = None
    kv_cache_dtype: str = "auto"


class Stage(Strategy):
    """A strategy that takes part in :func:`build_parts`; the stage classes below add their stage's hook."""

    def build(self, spec: ModelSpec) -> Variant:
        return build_parts(self.spec_name, [self], spec, self.settings)

    def export(self, spec: ModelSpec) -> ServedVariant:
        return export_parts(self.spec_name, [self], spec, self.settings)

    def after_load(self, model: Any, ctx: BuildContext) -> None:
        """Adjust the loaded model (runs before it is measured or used)."""

    def measure(self, model: Any, ctx: BuildContext) -> dict[str, Any]:
        return {}

    def notes(self, ctx: BuildContext) -> list[str]:
        return []

    def serve(self, ctx: BuildContext, opts: ServeOptions) -> None:
        """Set this stage's part of a served variant; ConfigError when a serving engine cannot express it."""
        if self.stage == "prune":
            return  # the cached pruned checkpoint is a plain dense model directory
        if self.stage == "checkpoint":
            fmt = ctx.resolved.get(self.name, {}).get("checkpoint_format")
            opts.quantization = str(fmt) if fmt else None
            return
        raise ConfigError(f"strategy {self.name} cannot be served by vLLM (no equivalent there)")


class PruneStage(Stage):
    """Changes the dense weights; ``prepare`` returns the directory of the pruned dense checkpoint."""

    stage: ClassVar[str] = "prune"

    def prepare(self, ctx: BuildContext) -> Path:
        raise NotImplementedError


class CheckpointStage(Stage):
    """Replaces the weights by a pre-quantized checkpoint; ``prepare`` returns its directory and records
    ``ctx.resolved[name]["checkpoint_format"]`` (the serving engine's ``quantization``)."""

    stage: ClassVar[str] = "checkpoint"

    def prepare(self, ctx: BuildContext) -> Path:
        raise NotImplementedError


class WeightsStage(Stage):
    """Quantizes the weights while the dense checkpoint is loaded: ``load_kwargs`` for ``from_pretrained``."""

    stage: ClassVar[str] = "weights"

    def load_kwargs(self, ctx: BuildContext) -> dict[str, Any]:
        raise NotImplementedError


class KVStage(Stage):
    """Quantizes the KV cache: ``make_cache_factory`` returns what builds a fresh cache (None: default)."""

    stage: ClassVar[str] = "kv"

    def make_cache_factory(self, model: Any, ctx: BuildContext) -> Callable[[], Any] | None:
        raise NotImplementedError


def _context(spec: ModelSpec, settings: StrategySettings) -> BuildContext:
    device = resolve_device(spec.device)
    dtype = resolve_dtype(spec.dtype, device)
    base_path, model_info = materialise(spec)
    tok = load_tokenizer(base_path, spec)
    return BuildContext(spec, settings, device, dtype, base_path, model_info, tok)


def _source(parts: list[Stage], ctx: BuildContext) -> Path:
    source = ctx.base_path
    for stage in ("prune", "checkpoint"):
        part = next((p for p in parts if p.stage == stage), None)
        if part is None:
            continue
        if not isinstance(part, SourceHook):
            raise TypeError(f"{type(part).__name__} fills the {stage} stage but has no prepare(ctx) -> Path")
        ts = time.perf_counter()
        source = part.prepare(ctx)
        ctx.timings[f"{part.name}_prepare_seconds"] = round(time.perf_counter() - ts, 3)
    return source


def _requested(name: str, parts: list[Stage]) -> dict[str, Any]:
    if len(parts) == 1:
        return parts[0].requested()
    return {"strategy": name, "config": {p.name: p.requested()["config"] for p in parts}}


def build_parts(name: str, parts: list[Stage], spec: ModelSpec, settings: StrategySettings) -> Variant:
    t0 = time.perf_counter()
    ctx = _context(spec, settings)
    device, dtype, tok, model_info = ctx.device, ctx.dtype, ctx.tokenizer, ctx.model_info
    source = _source(parts, ctx)

    load_kwargs: dict[str, Any] = {}
    wq = next((p for p in parts if isinstance(p, WeightsStage)), None)
    if wq is not None:
        load_kwargs.update(wq.load_kwargs(ctx))
    ts = time.perf_counter()
    model = load_weights(source, spec, **load_kwargs)
    ctx.timings["load_seconds"] = round(time.perf_counter() - ts, 3)
    for part in parts:
        part.after_load(model, ctx)
    footprint = footprint_bytes(model)  # before any forward (compressed-tensors decompresses on the first)

    kv = next((p for p in parts if isinstance(p, KVStage)), None)
    cache_factory = kv.make_cache_factory(model, ctx) if kv is not None else None

    measured: dict[str, dict[str, Any]] = {}
    for part in parts:
        measured[part.name] = {**ctx.facts.get(part.name, {}), **part.measure(model, ctx)}
    configs = {part.name: {**part.config(), **ctx.resolved.get(part.name, {})} for part in parts}
    notes: list[str] = []
    for part in parts:
        notes.extend(part.notes(ctx))
    notes.extend(ctx.notes)
    notes.append(
        f"every module that is not quantized runs in the run dtype {dtype_name(dtype)} (one dtype for all "
        "variants, docs/strategies.md, Rules shared by every variant)"
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
        "requested": _requested(name, parts),
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


def export_parts(name: str, parts: list[Stage], spec: ModelSpec, settings: StrategySettings) -> ServedVariant:
    """The variant of ``parts`` as a model directory plus serving options (vLLM); nothing is loaded in
    this process except what pruning needs to build (or find) its cached checkpoint."""
    t0 = time.perf_counter()
    ctx = _context(spec, settings)
    opts = ServeOptions()
    for part in parts:  # refuse what cannot be served before any pruning work
        if part.stage not in ("prune", "checkpoint"):
            part.serve(ctx, opts)
    source = _source(parts, ctx)
    for part in parts:
        if part.stage in ("prune", "checkpoint"):
            part.serve(ctx, opts)
    configs = {part.name: {**part.config(), **ctx.resolved.get(part.name, {})} for part in parts}
    measured = {part.name: dict(ctx.facts.get(part.name, {})) for part in parts}
    notes: list[str] = []
    for part in parts:
        notes.extend(part.notes(ctx))
    notes.extend(ctx.notes)
    ctx.timings["export_seconds"] = round(time.perf_counter() - t0, 3)
    single = len(parts) == 1
    info: dict[str, Any] = {
        **ctx.model_info,
        "path": str(source),
        "trust_remote_code": spec.trust_remote_code,
        "strategy": name,
        "components": [p.name for p in parts],
        "config": configs[parts[0].name] if single else {"order": [p.name for p in parts], **configs},
        "requested": _requested(name, parts),
        "measured": measured[parts[0].name] if single else measured,
        "notes": notes,
        "timings": ctx.timings,
        "served": {"quantization": opts.quantization, "kv_cache_dtype": opts.kv_cache_dtype},
    }
    return ServedVariant(name, str(source), str(ctx.base_path), opts.quantization, opts.kv_cache_dtype, info)


class Composite(Strategy):
    """``a+b``: the parts' stages applied in :data:`STAGE_ORDER` (validated by the registry)."""

    method = "composite"
    description = "a combination of strategies"
    stage = "composite"

    def __init__(self, spec_name: str, parts: list[Stage], settings: StrategySettings | None = None) -> None:
        super().__init__(spec_name, settings)
        self.parts = parts

    def config(self) -> dict[str, Any]:
        return {p.name: p.config() for p in self.parts}

    def requested(self) -> dict[str, Any]:
        return _requested(self.spec_name, self.parts)

    def validate(self) -> None:
        for p in self.parts:
            p.validate()

    def scoring_equals_base(self) -> bool:
        return all(p.scoring_equals_base() for p in self.parts)

    def build(self, spec: ModelSpec) -> Variant:
        return build_parts(self.spec_name, self.parts, spec, self.settings)

    def export(self, spec: ModelSpec) -> ServedVariant:
        return export_parts(self.spec_name, self.parts, spec, self.settings)
