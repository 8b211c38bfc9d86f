"""The strategy interface: turn the base model spec into a loaded variant (or a served directory).

A strategy fills one *stage* of a variant (docs/strategies.md):

* ``prune``      changes the dense weights (Wanda, SparseGPT, magnitude); the result is cached on disk;
* ``checkpoint`` replaces the weights by a pre-quantized checkpoint (AWQ, GPTQ);
* ``weights``    quantizes the weights while loading (bitsandbytes);
* ``kv``         quantizes the KV cache at inference (a ``cache_factory``).

The typed stage classes (:class:`~.compose.PruneStage`, ...) are in :mod:`.compose`.  Composed names
(``wanda+int8``) apply the stages in that order.

One source for every fact about a strategy: the **class** declares its ``method`` (family name), its
``stage``, its ``description`` and its typed settings (``Params``, a pydantic model with
``extra="forbid"``); an **instance** holds the variant ``name`` it was registered under, the run-level
:class:`StrategySettings` and its validated ``params``.  The registry (:mod:`biasshift.strategies`)
maps names to (class, params) presets and parses ``method@setting``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import ConfigError
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


@dataclass
class ServedVariant:
    """A variant as a serving engine (vLLM) loads it: a model directory plus engine options.

    ``path``: the Hugging Face model directory holding the variant's weights (the base directory for
    ``base`` and KV settings, the cached pruned dense checkpoint for pruning, the checkpoint directory
    for pre-quantized checkpoints). ``quantization``: None, ``"compressed-tensors"`` or
    ``"bitsandbytes"`` (vLLM's ``quantization=``). ``kv_cache_dtype``: ``"auto"`` or ``"fp8"``.
    ``info``: the same keys as :attr:`Variant.info` (strategy, config, requested, measured, notes and
    ``memory_footprint_bytes`` when known)."""

    name: str
    path: str
    tokenizer_path: str
    quantization: str | None = None
    kv_cache_dtype: str = "auto"
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StrategySettings:
    """Run-level settings that strategies read (``biasshift run`` options)."""

    seed: int = 0
    #: pruning calibration source: "c4" or a local .txt / .jsonl / .json.gz file
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
    #: the engine the run uses ("hf", "vllm"); None = not told (then engine-specific checks wait for build)
    engine: str | None = None


class StrategyParams(BaseModel):
    """Typed settings of one strategy (subclass per strategy; unknown keys are refused)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err.get("loc", ())) or "settings"
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if err.get("type") != "extra_forbidden" else f"{loc}: unknown setting")
    return "; ".join(parts)


class Strategy:
    #: family name, the part before ``@`` in ``method@setting`` (e.g. "wanda")
    method: ClassVar[str] = "base"
    #: the stage this strategy fills in a composed variant (see the module docstring)
    stage: ClassVar[str] = "base"
    #: one line for ``biasshift list`` (instances may refine it with :meth:`describe`)
    description: ClassVar[str] = ""
    #: the typed settings of this strategy
    Params: ClassVar[type[StrategyParams]] = StrategyParams
    #: ``method@SETTING`` forms this class accepts, for error messages and ``biasshift list`` (empty: none)
    setting_forms: ClassVar[tuple[str, ...]] = ()

    #: the variant (or component) name this instance was registered under (``wanda``, ``sparsegpt@0.6``)
    name: str

    def __init__(
        self,
        spec_name: str | None = None,
        settings: StrategySettings | None = None,
        params: StrategyParams | Mapping[str, Any] | None = None,
    ) -> None:
        self.name = spec_name or getattr(type(self), "name", None) or self.method
        self.spec_name = self.name
        self.settings = settings or StrategySettings()
        self.params = self.make_params(params, self.name)

    # ------------------------------------------------------------------ typed settings
    @classmethod
    def make_params(cls, params: StrategyParams | Mapping[str, Any] | None, label: str | None = None) -> StrategyParams:
        if isinstance(params, cls.Params):
            return params
        data = dict(params.model_dump() if isinstance(params, StrategyParams) else (params or {}))
        try:
            return cls.Params.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"strategy {label or cls.method}: {validation_message(exc)}") from None

    @classmethod
    def parse_setting(cls, text: str) -> list[dict[str, Any]]:
        """``method@TEXT`` -> one params dict per variant (a sweep gives several). Raise ConfigError."""
        raise ConfigError(f"strategy {cls.method} takes no @setting (use the plain name {cls.method!r})")

    @classmethod
    def format_setting(cls, params: StrategyParams) -> str:
        """The canonical ``TEXT`` of ``method@TEXT`` for these params (inverse of :meth:`parse_setting`)."""
        raise ConfigError(f"strategy {cls.method} has no @setting form")

    def describe(self) -> str:
        return self.description

    # ------------------------------------------------------------------ what is recorded
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

    def export(self, spec: ModelSpec) -> ServedVariant:
        """The variant as a serving engine loads it (vLLM). ConfigError when it cannot express it."""
        raise ConfigError(f"strategy {self.name} cannot be served by vLLM")


def footprint_bytes(model: Any) -> int:
    try:
        return int(model.get_memory_footprint())
    except Exception:
        return sum(p.numel() * p.element_size() for p in model.parameters())


class Base(Strategy):
    method = "base"
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

    def export(self, spec: ModelSpec) -> ServedVariant:
        from ..models import materialise

        path, model_info = materialise(spec)
        info = {**model_info, "strategy": self.name, "components": [self.name], "config": self.config(),
                "requested": self.requested(), "measured": {}, "notes": []}
        return ServedVariant(self.name, str(path), str(path), None, "auto", info)
