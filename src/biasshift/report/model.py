"""The typed records of a report: one :class:`Comparison` per run x benchmark x metric x variant (the
paired base-vs-variant statistics), descriptive :class:`ValueRow` s, sample generations, run provenance
and the :class:`Report` that holds them (docs/report.md). No I/O and no statistics here."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

BASE = "base"
REPORT_SCHEMA = "biasshift-comparison/1"


@dataclass
class Comparison:
    """One benchmark x metric x variant comparison of one run (variant minus base)."""

    model: str
    run_dir: str
    benchmark: str
    title: str
    metric: str
    primary: bool
    variant: str
    outcome: str
    higher_is_more_biased: bool
    quality: bool = False  # a quality anchor (e.g. perplexity), not a bias measure: higher_is_more_biased = higher is worse
    base: float | None = None
    value: float | None = None
    change: float | None = None
    rel_change: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    confidence: float = 0.95
    ci_method: str | None = None
    ci_reason: str | None = None
    n_boot: int = 0
    n_boot_invalid: int = 0
    test: str | None = None
    p_value: float | None = None
    p_holm: float | None = None
    test_reason: str | None = None
    significant: bool = False
    n_paired: int = 0
    n_base_only: int = 0
    n_variant_only: int = 0
    n_test: int | None = None
    mcnemar_b: int | None = None
    mcnemar_c: int | None = None
    base_reported: float | None = None
    value_reported: float | None = None
    notes: list[str] = field(default_factory=list)
    #: the metric's unbiased value (the benchmark's ``neutral``); when set, bias = |value - neutral|
    neutral: float | None = None
    dist_base: float | None = None  # |base - neutral|
    dist_value: float | None = None  # |value - neutral|
    dist_change: float | None = None  # dist_value - dist_base (> 0: farther from neutral = more biased)
    dist_rel_change: float | None = None
    dist_ci_low: float | None = None  # paired bootstrap CI of dist_change
    dist_ci_high: float | None = None
    #: a per-group comparison (e.g. BBQ's s_amb of one category): the per_group field and the group
    group_field: str | None = None
    group: str | None = None
    #: why the value is undefined, from the result documents (notes, unusable-answer rates)
    undefined_reason: str | None = None

    @property
    def key(self) -> str:
        return f"{self.benchmark}.{self.metric}" + (f"[{self.group_field}={self.group}]" if self.group is not None else "")

    @property
    def metric_label(self) -> str:
        return self.metric + (f" [{self.group_field}={self.group}]" if self.group is not None else "")

    @property
    def bias_change(self) -> float | None:
        """The change of the bias measure: of |value - neutral| when a neutral point is declared, else of the value."""
        return self.dist_change if self.neutral is not None else self.change

    @property
    def bias_rel_change(self) -> float | None:
        return self.dist_rel_change if self.neutral is not None else self.rel_change

    @property
    def bias_ci(self) -> tuple[float | None, float | None]:
        return (self.dist_ci_low, self.dist_ci_high) if self.neutral is not None else (self.ci_low, self.ci_high)

    @property
    def worse(self) -> bool | None:
        """True when the estimate goes towards more bias (farther from neutral where one is declared; for a
        quality metric: worse quality); None if missing. Says nothing about significance."""
        c = self.bias_change
        if c is None:
            return None
        if self.neutral is not None:
            return c > 0
        return c != 0 and (c > 0) == self.higher_is_more_biased

    @property
    def estimate_direction(self) -> str | None:
        """The direction of the point estimate alone: 'towards more bias' / 'towards less bias' / 'no change'."""
        c = self.bias_change
        if c is None:
            return None
        if c == 0:
            return "no change"
        if self.quality:
            return "towards worse quality" if self.worse else "towards better quality"
        return "towards more bias" if self.worse else "towards less bias"

    @property
    def bias_direction(self) -> str | None:
        """Only a Holm-significant change is called 'more biased' / 'less biased' ('worse quality' / 'better
        quality' for a quality metric); otherwise 'no significant change'; None when there is no value."""
        c = self.bias_change
        if c is None:
            return None
        if not self.significant:
            return "no significant change"
        if c == 0:
            return "no change"
        if self.quality:
            return "worse quality" if self.worse else "better quality"
        return "more biased" if self.worse else "less biased"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bias_direction"] = self.bias_direction
        d["estimate_direction"] = self.estimate_direction
        d["bias_change"] = self.bias_change
        return d


@dataclass
class ValueRow:
    """A descriptive per-variant value (per-group metric, rate or text characteristic); no test."""

    model: str
    benchmark: str
    section: str  # per_group field ('bias_type', 'country', ...), 'rates' or 'text'
    group: str  # group name ('' for rates/text)
    metric: str
    values: dict[str, float | None]  # variant -> value (base included)
    n: dict[str, int | None] = field(default_factory=dict)

    def change(self, variant: str) -> float | None:
        b, v = self.values.get(BASE), self.values.get(variant)
        return None if b is None or v is None else v - b


@dataclass
class Sample:
    """A few generations per generation benchmark, for reading (untrusted text)."""

    model: str
    benchmark: str
    key: str
    prompt: str
    outputs: dict[str, list[str]]  # variant -> sample texts


@dataclass
class RunInfo:
    label: str
    path: str
    model_id: str
    variants: list[str]
    benchmarks: list[str]
    skipped: dict[str, str]
    variant_info: dict[str, dict[str, Any]]


@dataclass
class Report:
    runs: list[RunInfo]
    rows: list[Comparison]
    per_group: list[ValueRow]
    rates: list[ValueRow]
    text: list[ValueRow]
    samples: list[Sample]
    settings: dict[str, Any]
    benchmarks: dict[str, dict[str, Any]]  # name -> title, primary_metric, higher_is_more_biased, outcome, kind, descr
    base_values: dict[tuple[str, str, str], float | None] = field(default_factory=dict)  # (model, bench, metric)
    warnings: list[str] = field(default_factory=list)
    diffs: list[Any] = field(default_factory=list)  # diff.ItemDiff per run x variant x benchmark
    efficiency: list[Any] = field(default_factory=list)  # efficiency.VariantEfficiency per run x variant
    tradeoffs: list[Any] = field(default_factory=list)  # efficiency.TradeoffPoint per run x benchmark x variant
    #: (run, model, variant, benchmark) that config.json requested but that have no result document
    missing: list[dict[str, str]] = field(default_factory=list)

    @property
    def alpha(self) -> float:
        return float(self.settings["alpha"])

    def variants(self) -> list[str]:
        """Every compared variant (strategy) across the runs, in first-seen order."""
        return list(dict.fromkeys(v for r in self.runs for v in r.variants if v != BASE))

    def models(self) -> list[str]:
        return [r.label for r in self.runs]

    def metric_keys(self) -> list[tuple[str, str]]:
        """(benchmark, metric) pairs of the table in first-seen order."""
        keys = list(dict.fromkeys((r.benchmark, r.metric) for r in self.rows))
        # benchmarks only run on base still appear in the summary with their primary metric
        for run in self.runs:
            for b in run.benchmarks:
                pm = self.benchmarks.get(b, {}).get("primary_metric")
                if pm and (b, pm) not in keys:
                    keys.append((b, pm))
        return sorted(keys, key=lambda k: bool(self.benchmarks.get(k[0], {}).get("quality")))  # quality anchors last

    def base_value(self, model: str, benchmark: str, metric: str) -> float | None:
        """The base model's value as its result document reports it (all of its units)."""
        return self.base_values.get((model, benchmark, metric))

    def has(self, model: str, benchmark: str) -> bool:
        return (model, benchmark) in {(m, b) for m, b, _ in self.base_values}

    def row(self, model: str, benchmark: str, metric: str, variant: str) -> Comparison | None:
        for r in self.rows:
            if (r.model, r.benchmark, r.metric, r.variant) == (model, benchmark, metric, variant) and r.group is None:
                return r
        return None

    def consistency(self) -> list[dict[str, Any]]:
        """Per strategy x benchmark primary metric: each model's change side by side (several runs only).

        ``verdict`` is 'disagree' when significant changes of different models point in opposite bias
        directions, 'agree' when every significant change points the same way, else 'no significant change'.
        """
        if len(self.runs) < 2:
            return []
        out = []
        for v in self.variants():
            for b, m in self.metric_keys():
                cells = {model: self.row(model, b, m, v) for model in self.models()}
                present = {k: c for k, c in cells.items() if c is not None}
                if len(present) < 2:
                    continue
                sig = {k: c.worse for k, c in present.items() if c.significant and c.bias_change}
                dirs = set(sig.values())
                verdict = "disagree" if len(dirs) > 1 else "agree" if dirs else "no significant change"
                out.append({"variant": v, "benchmark": b, "metric": m, "verdict": verdict,
                            "n_models": len(present), "n_significant": len(sig),
                            "models": {k: None if c is None else {
                                "change": c.change, "bias_change": c.bias_change, "ci": list(c.bias_ci),
                                "p_holm": c.p_holm, "significant": c.significant, "bias_direction": c.bias_direction,
                                "estimate_direction": c.estimate_direction} for k, c in cells.items()}})
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": REPORT_SCHEMA,
            "settings": self.settings,
            "runs": [asdict(r) for r in self.runs],
            "benchmarks": self.benchmarks,
            "comparisons": [r.to_dict() for r in self.rows],
            "base_values": [
                {"model": m, "benchmark": b, "metric": k, "value": v}
                for (m, b, k), v in self.base_values.items()
            ],
            "per_group": [asdict(r) for r in self.per_group],
            "rates": [asdict(r) for r in self.rates],
            "text": [asdict(r) for r in self.text],
            "samples": [asdict(s) for s in self.samples],
            "warnings": self.warnings,
            "consistency": self.consistency(),
            "efficiency": [e.to_dict() for e in self.efficiency],
            "tradeoffs": [t.to_dict() for t in self.tradeoffs],
            "diffs": [{**asdict(d), "rows": [{k: v for k, v in asdict(r).items() if k != "pending"} for r in d.rows]}
                      for d in self.diffs],
        }
