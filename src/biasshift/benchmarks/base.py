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
from ..engine.requests import Answer, Keyed, Prompt
from ..errors import ConfigError
from .options import BenchmarkOptions, parse as parse_options


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
    #: the benchmark's options (a ``BenchmarkOptions`` subclass: typed fields with defaults, unknown keys
    #: refused); users override them with --option NAME.KEY=VALUE
    Options: ClassVar[type[BenchmarkOptions]] = BenchmarkOptions
    #: the defaults as JSON (derived from ``Options``; for listings)
    default_options: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.default_options = cls.Options().model_dump(mode="json")

    def __init__(self, options: dict[str, Any] | BenchmarkOptions | None = None) -> None:
        #: upstream data quirks counted while loading (see count_quirk)
        self.quirks: dict[str, int] = {}
        #: subsets left out because their files could not be had: name -> reason
        self.skipped_subsets: dict[str, str] = {}
        #: the validated options (strings from the command line coerced; a bad key or value is a ConfigError)
        self.options = parse_options(self.Options, self.name, options)

    def options_json(self) -> dict[str, Any]:
        """The options as result documents record them (JSON values)."""
        return self.options.model_dump(mode="json")

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

    def units(self, items: Sequence[Item], responses: dict[str, Answer]) -> list[dict[str, Any]]:
        raise NotImplementedError

    def compute(self, units: Sequence[dict[str, Any]]) -> BenchmarkResult:
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------
    def unit_outcome(self, unit: dict[str, Any]) -> float | bool | None:
        """Per-unit value for binary/continuous outcomes (used by the paired tests)."""
        return unit.get("outcome")

    def primary_value(self, units: Sequence[dict[str, Any]]) -> float | None:
        return self.compute(units).value

    # -- report fast path (report/fast.py; owned by the report) --------------------------------------
    def weighted_metric(self, metric: str, units: Sequence[dict[str, Any]]) -> Callable[[Any], float | None] | None:
        """A vectorised ``compute(units).metrics[metric]`` for the report's paired bootstrap / permutation test.

        Returns ``f(w)``: the metric of the multiset in which ``units[i]`` appears ``w[i]`` times (``w`` a
        numpy array of non-negative integer weights, one per unit; weight 0 leaves a unit out), or None
        (the default): no fast path, the report recomputes ``compute`` on every resample. The report uses
        ``f`` only after it reproduces ``compute`` on the data at hand, so a wrong ``f`` costs speed, not
        correctness."""
        return None
    # -- end of the report fast path ------------------------------------------------------------------

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


def mean(xs: Sequence[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None
