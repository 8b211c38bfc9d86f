"""The strategy interface: turn the base model spec into a loaded variant.

A strategy fills one *stage* of a variant (docs/strategies.md):

* ``prune``      changes the dense weights (Wanda); the result is cached on disk;
* ``checkpoint`` replaces the weights by a pre-quantized checkpoint (AWQ, GPTQ);
* ``weights``    quantizes the weights while loading (bitsandbytes);
* ``kv``         quantizes the KV cache at inference (a ``cache_factory``).

Composed names (``wanda+int8``) apply the stages in that order; see :mod:`.compose`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..models import LoadedModel, ModelSpec, load_model


@dataclass
class Variant:
    name: str
    model: Any
    tokenizer: Any
    info: dict[str, Any] = field(default_factory=dict)
    #: builds a fresh KV cache object for generation (KV-cache quantization); None = default cache
    cache_factory: Callable[[], Any] | None = None
    #: the strategy changes scoring requests only when the prompt cache is quantized too
    quantize_prompt_cache: bool = False


@dataclass(frozen=True)
class StrategySettings:
    """Run-level settings that strategies read (``biasshift run`` options)."""

    seed: int = 0
    #: Wanda calibration source: "c4" or a local .txt / .jsonl / .json.gz file
    calib_data: str = "c4"
    calib_samples: int = 128
    #: requested calibration length; capped at the model's max_position_embeddings
    calib_seqlen: int = 2048
    #: score choice requests against the quantized prompt cache (KV strategies)
    quantize_prompt_cache: bool = False
    #: pre-quantized checkpoint per strategy name (awq, gptq): hub id[@revision] or local directory
    checkpoints: dict[str, str] = field(default_factory=dict)
    #: show progress bars while building (pruning)
    progress: bool = False


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


class Strategy:
    name: ClassVar[str]
    description: ClassVar[str]
    #: the stage this strategy fills in a composed variant (see the module docstring)
    stage: ClassVar[str] = "base"

    def __init__(self, spec_name: str | None = None, settings: StrategySettings | None = None) -> None:
        self.spec_name = spec_name or self.name
        self.settings = settings or StrategySettings()

    def config(self) -> dict[str, Any]:
        """The settings that define this variant (recorded in results)."""
        return {}

    def requested(self) -> dict[str, Any]:
        """JSON form of what was asked for; a run directory refuses a variant whose request changed."""
        return _jsonable({"strategy": self.spec_name, "config": self.config()})

    def validate(self) -> None:
        """Check settings and optional dependencies before any model is loaded (raise BiasshiftError)."""

    def scoring_equals_base(self) -> bool:
        """True when this variant provably gives the base model's answers to every scoring request
        (log-likelihood, token windows, choice): then the runner copies them from the base variant instead
        of recomputing them. Only a KV-cache setting that leaves the prompt cache unquantized qualifies."""
        return False

    def build(self, spec: ModelSpec) -> Variant:
        raise NotImplementedError


def footprint_bytes(model: Any) -> int:
    try:
        return int(model.get_memory_footprint())
    except Exception:
        return sum(p.numel() * p.element_size() for p in model.parameters())


class Base(Strategy):
    name = "base"
    description = "the unmodified model in the run's dtype"

    def build(self, spec: ModelSpec) -> Variant:
        from .measure import linear_report

        lm: LoadedModel = load_model(spec)
        info = {
            "strategy": self.name,
            "components": [self.name],
            "config": self.config(),
            "requested": self.requested(),
            "memory_footprint_bytes": footprint_bytes(lm.model),
            "measured": linear_report(lm.model),
            "notes": [],
        }
        return Variant(self.spec_name, lm.model, lm.tokenizer, {**lm.info, **info})
