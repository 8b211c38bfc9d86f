"""Engine registry: ``--engine NAME`` -> the class that answers requests on a variant.

Adding an engine = one module with a class satisfying :class:`.base.Engine` (plus its ``open``
classmethod) and one line in ``_REGISTRY``. The runner and the executors only call :func:`make_engine`.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import ConfigError
from .base import BatchCallback, Engine, EngineSettings, EngineStats

# name -> ("module:Class", description)
_REGISTRY: dict[str, tuple[str, str]] = {
    "hf": ("biasshift.engine.hf:HFEngine", "transformers in this process: batched forwards and our own decoding loop"),
    "vllm": ("biasshift.engine.vllm:VLLMEngine", "a vLLM server process from .venv-vllm (make vllm-env), over HTTP"),
    "auto": ("biasshift.engine.auto:AutoEngine", "per request kind the faster engine: vLLM for generation, HF for scoring"),
}


def names() -> list[str]:
    return list(_REGISTRY)


def describe() -> dict[str, str]:
    return {k: v[1] for k, v in _REGISTRY.items()}


def engine_class(name: str) -> Any:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown engine {name!r}; known: {', '.join(_REGISTRY)}")
    mod, cls = _REGISTRY[name][0].split(":")
    return getattr(importlib.import_module(mod), cls)


def make_engine(name: str, strategy: Any, spec: Any, settings: EngineSettings) -> Engine:
    """Build ``strategy``'s variant of the model ``spec`` for engine ``name`` and return the engine on it."""
    return engine_class(name).open(strategy, spec, settings)


__all__ = ["BatchCallback", "Engine", "EngineSettings", "EngineStats", "describe", "engine_class", "make_engine", "names"]
