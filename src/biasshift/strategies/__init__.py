"""Strategy registry. Adding a strategy = one module with a ``Strategy`` subclass + one line here.

Names combine with ``+`` (``wanda+int8``, ``int4+kv4``): at most one strategy per stage, applied in
the order prune -> checkpoint -> weights -> kv (:mod:`.compose`).  Combined names are normalised to
that order, so ``kv4+int4`` and ``int4+kv4`` are the same variant.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from ..errors import ConfigError
from .base import Strategy, StrategySettings, Variant
from .compose import STAGE_ORDER, Composite

# name -> ("module:Class", stage, description)
_REGISTRY: dict[str, tuple[str, str, str]] = {
    "base": ("biasshift.strategies.base:Base", "base", "the unmodified model in the run's dtype"),
    "int8": ("biasshift.strategies.bnb:Int8", "weights",
             "bitsandbytes LLM.int8() (threshold 6.0); other modules in the run dtype"),
    "int4": ("biasshift.strategies.bnb:Int4", "weights",
             "bitsandbytes 4-bit FP4, no double quant (the reference's INT4); compute in the run dtype"),
    "nf4": ("biasshift.strategies.bnb:NF4", "weights",
            "bitsandbytes 4-bit NF4 + double quant (an improvement, not in the reference)"),
    "kv4": ("biasshift.strategies.kvcache:KV4", "kv",
            "4-bit KV cache (transformers QuantizedCache, hqq, group 64, residual 128)"),
    "kv8": ("biasshift.strategies.kvcache:KV8", "kv",
            "8-bit KV cache (transformers QuantizedCache, hqq, group 64, residual 128)"),
    "wanda": ("biasshift.strategies.pruning:Wanda", "prune",
              "Wanda pruning, 50% unstructured per output row (--calib-*; cached on disk)"),
    "wanda-2:4": ("biasshift.strategies.pruning:Wanda24", "prune",
                  "Wanda pruning, 2:4 semi-structured (--calib-*; cached on disk)"),
    "awq": ("biasshift.strategies.checkpoint:AWQ", "checkpoint",
            "a pre-quantized AWQ checkpoint: --strategy-checkpoint awq=PATH_OR_HUB_ID"),
    "gptq": ("biasshift.strategies.checkpoint:GPTQ", "checkpoint",
             "a pre-quantized GPTQ checkpoint: --strategy-checkpoint gptq=PATH_OR_HUB_ID"),
}

_STAGE_WORDS = {
    "prune": "pruning methods",
    "checkpoint": "pre-quantized checkpoints",
    "weights": "weight quantizers",
    "kv": "KV-cache settings",
}


def names() -> list[str]:
    return list(_REGISTRY)


def describe() -> dict[str, str]:
    out = {k: v[2] for k, v in _REGISTRY.items()}
    out["A+B"] = ("combination, applied as pruning -> checkpoint or weight quantizer -> KV cache, "
                  "e.g. wanda+int8, int4+kv4, wanda-2:4+int4")
    return out


def _atomic(name: str) -> tuple[str, str, str]:
    if name not in _REGISTRY:
        known = ", ".join(_REGISTRY)
        raise ConfigError(f"unknown strategy {name!r}; known: {known}, and combinations A+B (see `biasshift list`)")
    return _REGISTRY[name]


def canonical(name: str) -> str:
    """Validate a strategy name (possibly ``a+b``) and return it in stage order."""
    parts = [p.strip() for p in name.split("+")]
    if any(not p for p in parts):
        raise ConfigError(f"malformed strategy name {name!r}")
    if len(parts) == 1:
        _atomic(parts[0])
        return parts[0]
    stages: dict[str, str] = {}
    for p in parts:
        stage = _atomic(p)[1]
        if stage == "base":
            raise ConfigError(f"{name!r}: 'base' cannot be combined (every run includes it anyway)")
        if stage in stages:
            what = "the same strategy twice" if stages[stage] == p else f"two {_STAGE_WORDS[stage]}"
            raise ConfigError(f"{name!r} combines {what} ({stages[stage]} and {p}); use at most one of each kind")
        stages[stage] = p
    if "checkpoint" in stages and ("weights" in stages or "prune" in stages):
        other = stages.get("weights") or stages["prune"]
        raise ConfigError(
            f"{name!r}: {stages['checkpoint']} loads an already quantized checkpoint, which cannot be "
            f"{'quantized again' if 'weights' in stages else 'pruned'} ({other}); only a KV setting can be added"
        )
    return "+".join(stages[s] for s in STAGE_ORDER if s in stages)


def _instantiate(name: str, settings: StrategySettings | None) -> Strategy:
    mod, cls = _atomic(name)[0].split(":")
    return getattr(importlib.import_module(mod), cls)(name, settings)


def get(name: str, settings: StrategySettings | None = None) -> Strategy:
    canon = canonical(name)
    if "+" not in canon:
        return _instantiate(canon, settings)
    parts = [_instantiate(p, settings) for p in canon.split("+")]
    return Composite(canon, parts, settings)


def parse_list(spec: str) -> list[str]:
    out: list[str] = []
    for part in spec.split(","):
        part = part.strip()
        if part:
            canon = canonical(part)
            if canon not in out:
                out.append(canon)
    if "base" not in out:
        out.insert(0, "base")  # every comparison needs the base model
    return out


def parse_checkpoints(values: Iterable[str]) -> dict[str, str]:
    """``--strategy-checkpoint NAME=PATH_OR_HUB_ID[@REVISION]`` (repeatable) -> {name: reference}."""
    out: dict[str, str] = {}
    for v in values:
        name, sep, ref = v.partition("=")
        name, ref = name.strip(), ref.strip()
        if not sep or not name or not ref:
            raise ConfigError(f"--strategy-checkpoint must look like NAME=PATH_OR_HUB_ID (e.g. awq=./llama-awq), not {v!r}")
        if _atomic(name)[1] != "checkpoint":
            takes = ", ".join(k for k, v in _REGISTRY.items() if v[1] == "checkpoint")
            raise ConfigError(f"--strategy-checkpoint {name}=...: only {takes} load checkpoints")
        if name in out and out[name] != ref:
            raise ConfigError(f"--strategy-checkpoint given twice for {name}")
        out[name] = ref
    return out


def prepare(names_: Iterable[str], settings: StrategySettings) -> dict[str, Strategy]:
    """Instantiate and validate every strategy of a run before anything is loaded (fail fast)."""
    strategies = {n: get(n, settings) for n in names_}
    used = {p for n in strategies for p in canonical(n).split("+")}
    unused = sorted(set(settings.checkpoints) - used)
    if unused:
        raise ConfigError(f"--strategy-checkpoint given for strategies not in this run: {', '.join(unused)}")
    for s in strategies.values():
        s.validate()
    return strategies


__all__ = [
    "Strategy",
    "StrategySettings",
    "Variant",
    "canonical",
    "describe",
    "get",
    "names",
    "parse_checkpoints",
    "parse_list",
    "prepare",
]
