"""What a benchmark is: data files, items, requests, per-unit records and metrics.

The data flow per benchmark is ``load`` (files -> items) -> ``requests`` (item -> engine requests) ->
engine -> ``units`` (items + answers -> one record per resampling unit) -> ``compute`` (units -> result).
``compute`` is a pure function of the unit records, so the comparison layer can bootstrap and permute
units (paired across base and variant) and recompute any metric, however non-linear.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from ..data import DataFile
from ..engine.requests import Keyed, Prompt
from ..errors import ConfigError


@dataclass(frozen=True)
class Item:
    """One benchmark row. ``unit`` is the resampling/limiting unit it belongs to (e.g. its question)."""

    id: str
    unit: str
    fields: dict[str, Any]


@dataclass
class BenchmarkResult:
    metrics: dict[str, float | int | None]
    primary: str
    n_units: int
    per_group: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    rates: dict[str, float | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def value(self) -> float | None:
        v = self.metrics.get(self.primary)
        return None if v is None else float(v)


@dataclass(frozen=True)
class RequestContext:
    """What a benchmark needs to turn an item into requests."""

    render: Callable[[Prompt], str]
    seed: int
    chat_template: bool
    #: the base tokenizer: text -> [anchor (BOS, else EOS)] + token ids; for benchmarks that cut token windows
    tokenize: Callable[[str], list[int]] | None = None


class Benchmark:
    """Base class. Subclasses set the class attributes and implement load/requests/units/compute."""

    name: ClassVar[str]
    title: ClassVar[str]
    kind: ClassVar[Literal["scoring", "generation"]]
    version: ClassVar[str] = "1"
    data_files: ClassVar[tuple[DataFile, ...]]
    primary_metric: ClassVar[str]
    primary_description: ClassVar[str] = ""
    #: True when a larger primary value means more bias (the gate's direction)
    higher_is_more_biased: ClassVar[bool] = True
    #: the primary metric's unbiased value (e.g. 50 for a % preference): "more biased" = farther from it; None: use higher_is_more_biased
    neutral: ClassVar[float | None] = None
    #: True for a quality anchor (e.g. perplexity), not a bias measure: the report shows it beside the bias changes
    is_quality_metric: ClassVar[bool] = False
    #: the per-unit outcome type, which picks the paired test: binary -> McNemar, continuous -> paired
    #: permutation of unit values, complex -> paired permutation of whole-metric recomputation
    outcome: ClassVar[Literal["binary", "continuous", "complex"]] = "complex"
    #: chat template default when the user says --chat-template auto (the reference code's choice)
    chat_template_default: ClassVar[bool] = False
    #: why ``--benchmarks all`` leaves this benchmark out (it needs a setting only the user can give, e.g. a
    #: classifier that is not shipped); empty = included in ``all``
    not_in_all: ClassVar[str] = ""
    #: benchmark options with their defaults; users override with --option NAME.KEY=VALUE
    default_options: ClassVar[dict[str, Any]] = {}

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        #: upstream data quirks counted while loading (see count_quirk)
        self.quirks: dict[str, int] = {}
        #: subsets left out because their files could not be had: name -> reason
        self.skipped_subsets: dict[str, str] = {}
        self.options = dict(self.default_options)
        for k, v in (options or {}).items():
            if k not in self.default_options:
                known = ", ".join(sorted(self.default_options)) or "none"
                raise ConfigError(f"benchmark {self.name} has no option {k!r} (options: {known})")
            self.options[k] = _coerce(v, self.default_options[k], f"{self.name}.{k}")

    # -- data files ----------------------------------------------------------------------
    #: upstream files split into independent subsets (BBQ categories, BOLD domains): subset name -> file.
    #: Such a benchmark can score the subsets whose files exist when others cannot be had.
    subset_files: ClassVar[dict[str, DataFile]] = {}
    subset_option: ClassVar[str] = ""

    def files(self) -> tuple[DataFile, ...]:
        """The files this instance will read (with its options): only these are resolved or downloaded."""
        if self.subset_files:
            return tuple(self.subset_files[s] for s in self.subsets())
        return self.data_files

    def prefer_local(self, is_local: Callable[[DataFile], bool]) -> None:
        """Before ``files``: a benchmark that accepts alternative inputs picks the one present locally."""

    def subsets(self) -> list[str]:
        """The subsets this instance reads (``subset_files`` benchmarks override)."""
        return []

    def drop_subsets(self, names: Sequence[str]) -> None:
        """Stop reading the given subsets (their files cannot be had); see ``subset_files``."""
        raise NotImplementedError

    def count_quirk(self, name: str, n: int = 1) -> None:
        """Count an upstream data quirk handled while loading (e.g. an empty prompt skipped); the counts
        (``self.quirks``) are recorded in every result document of the benchmark."""
        self.quirks[name] = self.quirks.get(name, 0) + n

    # -- to implement -------------------------------------------------------------------
    def load(self, files: dict[str, Path]) -> list[Item]:
        raise NotImplementedError

    def requests(self, item: Item, ctx: RequestContext) -> list[Keyed]:
        raise NotImplementedError

    def units(self, items: Sequence[Item], responses: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        raise NotImplementedError

    def compute(self, units: Sequence[dict[str, Any]]) -> BenchmarkResult:
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------
    def unit_outcome(self, unit: dict[str, Any]) -> float | bool | None:
        """Per-unit value for binary/continuous outcomes (used by the paired tests)."""
        return unit.get("outcome")

    def primary_value(self, units: Sequence[dict[str, Any]]) -> float | None:
        return self.compute(units).value

    @classmethod
    def select(cls, items: list[Item], limit: int | None, seed: int) -> list[Item]:
        """Keep ``limit`` units chosen by a seeded hash: the same subset for every variant and rerun."""
        if limit is None:
            return items
        if limit < 1:
            raise ConfigError("--limit must be >= 1")
        units = sorted({it.unit for it in items}, key=lambda u: hashlib.sha256(f"{seed}\x00{u}".encode()).hexdigest())
        keep = set(units[:limit])
        return [it for it in items if it.unit in keep]


def _coerce(value: Any, default: Any, name: str) -> Any:
    if not isinstance(value, str) or isinstance(default, str) or default is None:
        return value
    try:
        if isinstance(default, bool):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
    except ValueError:
        raise ConfigError(f"option {name}: cannot read {value!r} as {type(default).__name__}") from None
    return value


def mean(xs: Sequence[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None
