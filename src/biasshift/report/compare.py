"""Load run directories and build the base-vs-variant comparison table (docs/report.md).

For every run directory x benchmark x metric x variant (variant != base) one :class:`Comparison` row:
the base and variant values, the absolute and relative change, a paired percentile bootstrap CI of the
change and the paired significance test that the benchmark's ``outcome`` picks. Pairing is by the
``unit`` field of the unit records (units/<variant>/<benchmark>.jsonl): units present on one side only
are dropped (and counted), and base and variant values are recomputed on the paired units with the
benchmark's own ``compute``, so value, change, CI and test all describe the same units. Holm's
correction runs over every p-value of the table (all runs, benchmarks, metrics and variants).

Which test (docs/statistics.md):
- ``binary`` (primary metric): exact McNemar on ``unit_outcome`` of the paired units;
- ``continuous`` (primary metric): sign-flip permutation test on the paired unit outcomes;
- ``complex``, and any non-primary metric: paired permutation test recomputing the whole metric.

The bootstrap always resamples paired units. It uses a vectorised path when one applies and is
verified against ``compute`` on the data at hand (metric = 1 or 100 x mean of the unit outcomes;
GlobalOpinionQA's per-country medians and Gini, see :mod:`.fast`), and otherwise recomputes the metric
with ``compute`` on every resample.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import benchmarks as bench_registry
from ..benchmarks.base import Benchmark
from ..errors import BiasshiftError, ConfigError
from ..stats import holm, mcnemar_exact, paired_bootstrap, paired_bootstrap_mean, paired_permutation_mean, \
    paired_permutation_test, relative_change
from . import fast, integrity

BASE = "base"
REPORT_SCHEMA = "biasshift-comparison/1"


# ----------------------------------------------------------------------------------------------- loading
@dataclass
class BenchData:
    """One benchmark's result document and unit records for one variant of one run."""

    name: str
    doc: dict[str, Any]
    units: list[dict[str, Any]] | None  # None when the units file is missing
    units_path: Path

    @property
    def info(self) -> dict[str, Any]:
        return self.doc.get("benchmark", {})

    @property
    def value(self) -> float | None:
        v = (self.doc.get("primary") or {}).get("value")
        return _num(v)

    def metric(self, name: str) -> float | None:
        return _num((self.doc.get("metrics") or {}).get(name))


@dataclass
class RunData:
    path: Path
    label: str
    model_id: str
    config: dict[str, Any]
    summary: dict[str, Any]
    variants: dict[str, dict[str, BenchData]]  # variant -> benchmark -> data

    @property
    def benchmarks(self) -> list[str]:
        order = list(self.config.get("benchmarks") or [])
        seen = {b for v in self.variants.values() for b in v}
        return [b for b in order if b in seen] + sorted(seen - set(order))

    @property
    def compared_variants(self) -> list[str]:
        return [v for v in self.variants if v != BASE]


def _num(v: Any) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise BiasshiftError(f"missing file {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BiasshiftError(f"{path} is not valid JSON ({exc})") from None


def _read_units(path: Path) -> list[dict[str, Any]] | None:
    if not path.exists():
        return None
    units = []
    seen: set[str] = set()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BiasshiftError(f"cannot read unit records {path} ({exc}); rerun `biasshift run` on the directory") from None
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            u = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BiasshiftError(f"{path} line {lineno} is not valid JSON ({exc})") from None
        if not isinstance(u, dict) or "unit" not in u:
            raise BiasshiftError(f"{path} line {lineno}: a unit record needs a 'unit' field")
        key = str(u["unit"])
        if key in seen:
            raise BiasshiftError(f"{path} line {lineno}: duplicate unit {key!r}")
        seen.add(key)
        units.append(u)
    return units


def _short_model(model_id: str) -> str:
    if model_id.startswith(("/", ".", "~")) or os.sep in model_id and Path(model_id).exists():
        return Path(model_id).name or model_id
    return model_id


def load_run(path: str | Path) -> RunData:
    """Read a run directory (results/, units/, config.json, summary.json); store.sqlite is read lazily."""
    path = Path(path)
    res = path / "results"
    if not path.is_dir():
        raise BiasshiftError(f"run directory {path} does not exist")
    if not res.is_dir():
        raise BiasshiftError(f"{path} is not a biasshift run directory (no results/ folder); run `biasshift run` first")
    config = _read_json(path / "config.json") if (path / "config.json").exists() else {}
    summary = _read_json(path / "summary.json") if (path / "summary.json").exists() else {}
    vdirs = sorted(p.name for p in res.iterdir() if p.is_dir())
    order = [v for v in (config.get("strategies") or []) if v in vdirs]
    order = ([BASE] if BASE in vdirs and BASE not in order else []) + order
    order += [v for v in vdirs if v not in order]
    variants: dict[str, dict[str, BenchData]] = {}
    for v in order:
        bd: dict[str, BenchData] = {}
        for f in sorted((res / v).glob("*.json")):
            doc = _read_json(f)
            if not isinstance(doc, dict) or "benchmark" not in doc:
                raise BiasshiftError(f"{f} is not a biasshift result document (no 'benchmark' field)")
            info = doc["benchmark"]
            name = integrity.check_doc_name(f, info.get("name", f.stem) if isinstance(info, dict) else None)
            upath = path / "units" / v / f"{name}.jsonl"
            bd[name] = BenchData(name, doc, _read_units(upath), upath)
        if bd:
            variants[v] = bd
    if not variants:
        raise BiasshiftError(f"{path} holds no result documents (results/<variant>/<benchmark>.json)")
    model_id = str(
        (summary.get("model") or {}).get("model_id")
        or next((d.doc.get("model", {}).get("model_id") for vd in variants.values() for d in vd.values()), None)
        or config.get("model")
        or path.name
    )
    return RunData(path, _short_model(model_id), model_id, config, summary, variants)


def load_runs(paths: Sequence[str | Path]) -> list[RunData]:
    if not paths:
        raise ConfigError("give at least one run directory")
    runs = [load_run(p) for p in paths]
    labels = [r.label for r in runs]
    for r in runs:  # disambiguate equal model labels by the run directory's name, then by position
        if labels.count(r.label) > 1:
            r.label = f"{r.label} [{r.path.name}]"
    labels = [r.label for r in runs]
    for i, r in enumerate(runs):
        if labels.count(r.label) > 1:
            r.label = f"{r.label} #{i + 1}"
    return runs


# ----------------------------------------------------------------------------------------------- rows
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


# ----------------------------------------------------------------------------------------------- metric specs
def parse_metric_specs(specs: Iterable[str] | None) -> list[tuple[str, str | None]]:
    """``BENCH`` or ``BENCH.METRIC`` strings -> [(bench, metric or None for the primary)]."""
    out: list[tuple[str, str | None]] = []
    for s in specs or []:
        for part in str(s).split(","):
            part = part.strip()
            if not part:
                continue
            bench, _, metric = part.partition(".")
            if not bench:
                raise ConfigError(f"--metric must look like BENCHMARK or BENCHMARK.METRIC, not {part!r}")
            item = (bench, metric or None)
            if item not in out:
                out.append(item)
    return out


def _resolve_specs(runs: list[RunData], specs: list[tuple[str, str | None]]) -> dict[str, list[str]]:
    """Validate specs against the runs; returns bench -> extra metric names (primary resolved)."""
    present: dict[str, set[str]] = {}
    primaries: dict[str, str] = {}
    for run in runs:
        for vd in run.variants.values():
            for name, bd in vd.items():
                present.setdefault(name, set()).update((bd.doc.get("metrics") or {}).keys())
                primaries.setdefault(name, bd.info.get("primary_metric") or (bd.doc.get("primary") or {}).get("metric"))
    out: dict[str, list[str]] = {}
    for bench, metric in specs:
        if bench not in present:
            raise ConfigError(f"--metric {bench}: no such benchmark in the run directories "
                              f"(present: {', '.join(sorted(present)) or 'none'})")
        m = metric or primaries[bench]
        if m not in present[bench]:
            raise ConfigError(f"--metric {bench}.{m}: {bench} has no metric {m!r} "
                              f"(metrics: {', '.join(sorted(present[bench]))})")
        out.setdefault(bench, [])
        if m not in out[bench]:
            out[bench].append(m)
    return out


# ----------------------------------------------------------------------------------------------- statistics
def _bench_instance(doc: dict[str, Any]) -> tuple[Benchmark | None, str | None]:
    info = doc.get("benchmark", {})
    name = info.get("name")
    try:
        cls = bench_registry.get(name)
    except BiasshiftError:
        return None, f"benchmark {name!r} is not known to this biasshift version: values only, no statistics"
    try:
        return cls(info.get("options") or {}), None
    except BiasshiftError as exc:
        return None, f"cannot rebuild benchmark {name} with the stored options ({exc}): values only, no statistics"


def _is_quality(doc: dict[str, Any]) -> bool:
    """A quality anchor (perplexity), not a bias measure: from the document, else from the benchmark class."""
    info = doc.get("benchmark", {})
    if "is_quality_metric" in info:
        return bool(info["is_quality_metric"])
    try:
        return bool(getattr(bench_registry.get(info.get("name")), "is_quality_metric", False))
    except BiasshiftError:
        return False


#: benchmarks whose primary metric is also compared (and gated) per group: benchmark -> unit / per_group field.
#: BBQ's s_amb is a mean over categories, in which +0.2 and -0.2 cancel to "unbiased".
PER_GROUP_COMPARED = {"bbq": "category"}


def neutral_of(doc: dict[str, Any], metric: str) -> float | None:
    """The neutral (unbiased) value of ``metric``: the benchmark's ``neutral`` (from the document, else the
    class), for its primary metric and the variants of it named ``<primary>_...`` (e.g. the sum-score
    CrowS percentage, BBQ's pooled s_amb); None for any other metric."""
    info = doc.get("benchmark", {})
    pm = info.get("primary_metric") or (doc.get("primary") or {}).get("metric")
    if not pm or not (metric == pm or metric.startswith(pm + "_")):
        return None
    if "neutral" in info:
        return _num(info["neutral"])
    try:
        return _num(getattr(bench_registry.get(info.get("name")), "neutral", None))
    except BiasshiftError:
        return None


def _filtered(bd: BenchData, field_name: str, group: str) -> BenchData:
    """The units of one group only; the document's own values (all groups) are not reused."""
    units = None if bd.units is None else [u for u in bd.units if str(u.get(field_name)) == group]
    return BenchData(bd.name, {"benchmark": bd.info, "metrics": {}, "rates": bd.doc.get("rates"), "notes": bd.doc.get("notes")},
                     units, bd.units_path)


def _metric_of(bench: Benchmark, metric: str) -> Callable[[Sequence[dict[str, Any]]], float | None]:
    def f(units: Sequence[dict[str, Any]]) -> float | None:
        return _num(bench.compute(units).metrics.get(metric))

    return f


def _close(a: float | None, b: float | None, tol: float = 1e-9) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= tol * max(1.0, abs(a), abs(b))


def _linear_scale(bench: Benchmark, metric_fn: Callable, ub: list[dict], uv: list[dict], vb: float | None,
                  vv: float | None, ob: list, ov: list, seed: int) -> float | None:
    """The s in metric = s * mean(unit outcomes) when that holds on these units (checked), else None."""
    if vb is None or vv is None or any(o is None for o in ob) or any(o is None for o in ov):
        return None
    try:
        ab, av = np.asarray(ob, dtype=float), np.asarray(ov, dtype=float)
    except (TypeError, ValueError):
        return None
    rng = np.random.default_rng(seed + 7919)
    checks = [rng.integers(0, len(ub), size=len(ub)) for _ in range(2)]
    for s in (1.0, 100.0):
        if not (_close(vb, s * ab.mean()) and _close(vv, s * av.mean())):
            continue
        ok = all(
            _close(metric_fn([ub[i] for i in idx]), s * ab[idx].mean()) and _close(metric_fn([uv[i] for i in idx]), s * av[idx].mean())
            for idx in checks
        )
        if ok:
            return s
    return None


def _compare_one(row: Comparison, bench: Benchmark, base_bd: BenchData, var_bd: BenchData, n_boot: int,
                 n_perm: int, seed: int, confidence: float) -> None:
    """Fill values, change, CI and test of ``row`` from the unit records (in place)."""
    metric = row.metric
    ub_all, uv_all = base_bd.units, var_bd.units
    assert ub_all is not None and uv_all is not None
    vkeys = {str(u["unit"]): u for u in uv_all}
    bkeys = {str(u["unit"]) for u in ub_all}
    ub = [u for u in ub_all if str(u["unit"]) in vkeys]
    uv = [vkeys[str(u["unit"])] for u in ub]
    row.n_paired = len(ub)
    row.n_base_only = len(ub_all) - len(ub)
    row.n_variant_only = sum(1 for k in vkeys if k not in bkeys)
    if row.n_base_only or row.n_variant_only:
        row.notes.append(f"{row.n_base_only} unit(s) only in base and {row.n_variant_only} only in {row.variant} "
                         f"were dropped; values are recomputed on the {row.n_paired} paired units")
    metric_fn = _metric_of(bench, metric)
    # compute is a pure function of the units, so with nothing dropped the documents hold compute(paired units)
    full = not row.n_base_only and not row.n_variant_only and not getattr(base_bd, "units_disagree", False) \
        and not getattr(var_bd, "units_disagree", False)
    vb = base_bd.metric(metric) if full and metric in (base_bd.doc.get("metrics") or {}) else (metric_fn(ub) if ub else None)
    vv = var_bd.metric(metric) if full and metric in (var_bd.doc.get("metrics") or {}) else (metric_fn(uv) if uv else None)
    row.base, row.value = vb, vv
    row.change = None if vb is None or vv is None else vv - vb
    row.rel_change = relative_change(vb, vv)
    if not ub:
        row.ci_reason = row.test_reason = "no paired units"
        return
    if vb is None or vv is None:  # no number to compare: no CI and no test (and no place in the Holm family)
        side = "base and variant" if vb is None and vv is None else "base" if vb is None else row.variant
        why = [w for w in (why_undefined(base_bd.doc, "base") if vb is None else None,
                           why_undefined(var_bd.doc, row.variant) if vv is None else None) if w]
        row.undefined_reason = f"metric undefined for {side}" + (f": {'; '.join(why)}" if why else " (not enough data)")
        row.ci_reason = row.test_reason = row.undefined_reason
        return
    n = len(ub)
    outcome = row.outcome if row.primary else "complex"
    ob = [bench.unit_outcome(u) for u in ub]
    ov = [bench.unit_outcome(u) for u in uv]

    # ---- bootstrap CI of the change
    scale = _linear_scale(bench, metric_fn, ub, uv, vb, vv, ob, ov, seed) if row.primary and outcome != "complex" else None
    evaluator: fast.Evaluator | None = None
    if scale is not None:
        ci = paired_bootstrap_mean(scale * np.asarray(ob, dtype=float), scale * np.asarray(ov, dtype=float),
                                   n_boot=n_boot, seed=seed, confidence=confidence)
        row.ci_method = f"paired bootstrap, {ci.method} ({'' if scale == 1 else '100 x '}mean of unit outcomes)"
    else:
        evaluator = fast.evaluator(bench, metric, ub, uv, metric_fn, vb, vv)
        if evaluator.note:
            row.notes.append(evaluator.note)
        ci = paired_bootstrap(n, evaluator.delta, n_boot=n_boot, seed=seed, confidence=confidence)
        row.ci_method = f"paired bootstrap, {ci.method} ({evaluator.method})"
    row.n_boot, row.n_boot_invalid = ci.n_boot, ci.n_invalid
    if ci.low is not None and ci.high is not None:
        row.ci_low, row.ci_high = ci.low, ci.high
        if row.change is not None and not (ci.low - 1e-12 <= row.change <= ci.high + 1e-12):
            row.notes.append("the bootstrap interval does not contain the point estimate (skewed resampling distribution)")
    else:
        row.ci_reason = row.ci_reason or ci.reason
    if ci.n_invalid:
        row.notes.append(f"{ci.n_invalid} of {ci.n_boot} bootstrap resamples had an undefined metric and were skipped")
    if row.neutral is not None:  # bias = distance from the neutral point: CI and test on the change of that distance
        _distance_stats(row, scale, ob, ov, ub, uv, metric_fn, n_boot, n_perm, seed, confidence)
        return

    # ---- paired test
    if outcome in ("binary", "continuous"):
        pairs = [(b, v) for b, v in zip(ob, ov) if b is not None and v is not None]
        row.n_test = len(pairs)
        if len(pairs) < n:
            row.notes.append(f"{n - len(pairs)} paired unit(s) without an outcome on one side are left out of the test")
        if not pairs:
            row.test_reason = "no unit has an outcome on both sides"
            return
        if outcome == "binary":
            try:
                mc = mcnemar_exact([p[0] for p in pairs], [p[1] for p in pairs])
            except ValueError as exc:
                row.test_reason = f"McNemar needs binary unit outcomes ({exc})"
                return
            row.test, row.p_value, row.mcnemar_b, row.mcnemar_c = "McNemar exact", mc.p_value, mc.b, mc.c
        else:
            pm = paired_permutation_mean([float(p[0]) for p in pairs], [float(p[1]) for p in pairs], n_perm=n_perm, seed=seed)
            row.test, row.p_value = f"paired permutation of unit outcomes ({pm.method})", pm.p_value
            if pm.p_value is None:
                row.test_reason = pm.reason
        row.test_reason = None if row.p_value is not None else row.test_reason
        return
    if evaluator is None:
        evaluator = fast.evaluator(bench, metric, ub, uv, metric_fn, vb, vv)
    row.n_test = n
    pt = paired_permutation_test(n, evaluator.stat, n_perm=n_perm, seed=seed)
    row.test = f"paired permutation, metric recomputed ({pt.method}, {evaluator.method})"
    row.p_value = pt.p_value
    if pt.p_value is None:
        row.test_reason = pt.reason
    elif pt.n_invalid:
        row.notes.append(f"{pt.n_invalid} of {pt.n_perm} relabellings had an undefined metric and were skipped")


def _distance_stats(row: Comparison, scale: float | None, ob: list, ov: list, ub: list[dict], uv: list[dict],
                    metric_fn: Callable, n_boot: int, n_perm: int, seed: int, confidence: float) -> None:
    """|value - neutral| of both sides, a paired bootstrap CI and a paired permutation test of its change.

    Each resample / relabelling recomputes both sides' metric (100 x mean of the unit outcomes when that
    was verified, else ``compute``) and then the distances, so the CI and the test describe the change of
    the distance itself, not of the signed value.
    """
    neutral = float(row.neutral)  # type: ignore[arg-type]
    assert row.base is not None and row.value is not None
    row.dist_base, row.dist_value = abs(row.base - neutral), abs(row.value - neutral)
    row.dist_change = row.dist_value - row.dist_base
    row.dist_rel_change = relative_change(row.dist_base, row.dist_value)
    n = len(ub)
    if scale is not None:
        ab, av = scale * np.asarray(ob, dtype=float), scale * np.asarray(ov, dtype=float)

        def sides(idx: np.ndarray) -> tuple[float | None, float | None]:
            return float(ab[idx].mean()), float(av[idx].mean())

        def sides_swapped(swap: np.ndarray) -> tuple[float | None, float | None]:
            return float(np.where(swap, av, ab).mean()), float(np.where(swap, ab, av).mean())

        how = f"{'' if scale == 1 else '100 x '}mean of unit outcomes"
    else:
        def sides(idx: np.ndarray) -> tuple[float | None, float | None]:
            return metric_fn([ub[i] for i in idx]), metric_fn([uv[i] for i in idx])

        def sides_swapped(swap: np.ndarray) -> tuple[float | None, float | None]:
            return (metric_fn([v if s else b for b, v, s in zip(ub, uv, swap)]),
                    metric_fn([b if s else v for b, v, s in zip(ub, uv, swap)]))

        how = "metric recomputed with compute()"

    def dist(pair: tuple[float | None, float | None]) -> float | None:
        b, v = pair
        return None if b is None or v is None else abs(v - neutral) - abs(b - neutral)

    ci = paired_bootstrap(n, lambda idx: dist(sides(idx)), n_boot=n_boot, seed=seed, confidence=confidence)
    row.dist_ci_low, row.dist_ci_high = ci.low, ci.high
    if ci.low is None:
        row.notes.append(f"no CI for the change of |{row.metric} - {neutral:g}|: {ci.reason}")
    pt = paired_permutation_test(n, lambda swap: dist(sides_swapped(swap)), n_perm=n_perm, seed=seed)
    row.test = f"paired permutation of |{row.metric} - {neutral:g}| ({pt.method}, {how})"
    row.n_test = n
    row.p_value = pt.p_value
    row.test_reason = None if pt.p_value is not None else pt.reason
    if pt.n_invalid:
        row.notes.append(f"{pt.n_invalid} of {pt.n_perm} relabellings had an undefined metric and were skipped")
    if row.outcome == "binary" and row.primary:  # the discordant counts, for reading (the test is on the distance)
        pairs = [(b, v) for b, v in zip(ob, ov) if b is not None and v is not None]
        row.mcnemar_b = sum(1 for b, v in pairs if b and not v)
        row.mcnemar_c = sum(1 for b, v in pairs if v and not b)


_UNUSABLE = ("refusal", "multiple", "no_response", "unparseable", "empty", "undefined")


def why_undefined(doc: dict[str, Any], side: str) -> str | None:
    """A short reason why a result document's metric is undefined: its unusable-answer rates and notes."""
    rates = {k: _num(v) for k, v in (doc.get("rates") or {}).items()}
    parts: list[str] = []
    unusable: float | None = None
    if rates.get("parse_rate") is not None:
        unusable = 1.0 - float(rates["parse_rate"])  # type: ignore[arg-type]
    else:  # per answer kind (suffix): refusal_rate_race + multiple_rate_race, ...; the worst suffix
        by_suffix: dict[str, float] = {}
        for k, v in rates.items():
            for tag in _UNUSABLE:
                if v is not None and k.startswith(f"{tag}_rate"):
                    suffix = k[len(f"{tag}_rate"):]
                    by_suffix[suffix] = by_suffix.get(suffix, 0.0) + v
        if by_suffix:
            unusable = max(by_suffix.values())
    if unusable is not None:
        listed = ", ".join(f"{k} {100 * v:.0f}%" for k, v in rates.items()
                           if v is not None and v > 0 and any(k.startswith(t) for t in _UNUSABLE))
        parts.append(f"{100 * min(1.0, unusable):.0f}% of {side}'s answers unusable" + (f" ({listed})" if listed else ""))
    notes = [str(n) for n in doc.get("notes") or [] if any(w in str(n).lower() for w in ("undefined", "not enough", "too few"))]
    parts += notes[:3]
    return "; ".join(parts) or None


# ----------------------------------------------------------------------------------------------- report
def _value_rows(run: RunData) -> tuple[list[ValueRow], list[ValueRow], list[ValueRow]]:
    per_group: list[ValueRow] = []
    rates: list[ValueRow] = []
    text: list[ValueRow] = []
    vnames = list(run.variants)
    for b in run.benchmarks:
        docs = {v: run.variants[v][b].doc for v in vnames if b in run.variants[v]}
        # per-group: field -> group -> metric
        fields = list(dict.fromkeys(f for d in docs.values() for f in (d.get("per_group") or {})))
        for fld in fields:
            groups = list(dict.fromkeys(g for d in docs.values() for g in ((d.get("per_group") or {}).get(fld) or {})))
            for g in groups:
                entries = {v: ((d.get("per_group") or {}).get(fld) or {}).get(g) for v, d in docs.items()}
                metrics = list(dict.fromkeys(k for e in entries.values() if isinstance(e, dict) for k, val in e.items()
                                             if k != "n" and (val is None or isinstance(val, (int, float)) and not isinstance(val, bool))))
                for m in metrics:
                    per_group.append(ValueRow(
                        run.label, b, fld, str(g), m,
                        {v: _num(e.get(m)) if isinstance(e, dict) else None for v, e in entries.items()},
                        {v: (e.get("n") if isinstance(e, dict) else None) for v, e in entries.items()},
                    ))
        rnames = list(dict.fromkeys(k for d in docs.values() for k in (d.get("rates") or {})))
        for k in rnames:
            rates.append(ValueRow(run.label, b, "rates", "", k, {v: _num((d.get("rates") or {}).get(k)) for v, d in docs.items()}))
        tnames = list(dict.fromkeys(k for d in docs.values() for k in (d.get("metrics") or {}) if k.startswith("text_")))
        for k in tnames:
            text.append(ValueRow(run.label, b, "text", "", k, {v: _num((d.get("metrics") or {}).get(k)) for v, d in docs.items()}))
    return per_group, rates, text


def _samples(run: RunData, per_benchmark: int, max_chars: int = 2000) -> list[Sample]:
    """Up to ``per_benchmark`` generations per generation benchmark from store.sqlite (read-only)."""
    db = run.path / "store.sqlite"
    if per_benchmark <= 0 or not db.exists():
        return []
    gen = [b for b in run.benchmarks if any(run.variants[v].get(b) and run.variants[v][b].info.get("kind") == "generation"
                                            for v in run.variants)]
    if not gen:
        return []
    out: list[Sample] = []
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    except sqlite3.Error:
        return []
    try:
        for b in gen:
            try:
                rows = conn.execute(
                    "SELECT key, request, response FROM records WHERE variant=? AND benchmark=? ORDER BY key LIMIT 500",
                    (BASE, b)).fetchall()
            except sqlite3.Error:
                return out
            picked = []
            for key, rq, rs in rows:
                try:
                    req = json.loads(rq)
                except json.JSONDecodeError:
                    continue
                if req.get("kind") == "generate":
                    picked.append((key, str(req.get("prompt", ""))))
                if len(picked) >= per_benchmark:
                    break
            for key, prompt in picked:
                outputs: dict[str, list[str]] = {}
                for v in run.variants:
                    r = conn.execute("SELECT response FROM records WHERE variant=? AND benchmark=? AND key=?", (v, b, key)).fetchone()
                    if r is None:
                        continue
                    try:
                        resp = json.loads(r[0])
                    except json.JSONDecodeError:
                        continue
                    outputs[v] = [str(s.get("text", ""))[:max_chars] for s in resp.get("samples", []) if isinstance(s, dict)]
                out.append(Sample(run.label, b, str(key), prompt[-max_chars:], outputs))
    finally:
        conn.close()
    return out


def build_report(
    run_dirs: Sequence[str | Path] | Sequence[RunData],
    metrics: Iterable[str] | None = None,
    n_boot: int = 2000,
    n_perm: int = 5000,
    seed: int = 0,
    alpha: float = 0.05,
    confidence: float = 0.95,
    samples: int = 3,
    log: Callable[[str], None] | None = None,
    diff_top: int = 10,
) -> Report:
    """Compare every variant with base in each run directory; Holm over the whole table."""
    if not 0 < alpha < 1:
        raise ConfigError(f"--alpha must be in (0, 1), got {alpha}")
    if n_boot < 1 or n_perm < 1:
        raise ConfigError("--n-boot and --n-perm must be >= 1")
    runs = list(run_dirs) if all(isinstance(r, RunData) for r in run_dirs) else load_runs(run_dirs)  # type: ignore[arg-type]
    extra = _resolve_specs(runs, parse_metric_specs(metrics))
    rows: list[Comparison] = []
    base_values: dict[tuple[str, str, str], float | None] = {}
    warnings: list[str] = []
    missing, more = integrity.annotate(runs)  # requested-but-missing results, units that disagree with documents
    warnings += more
    benches: dict[str, dict[str, Any]] = {}
    infos: list[RunInfo] = []
    pg: list[ValueRow] = []
    rates: list[ValueRow] = []
    text: list[ValueRow] = []
    smp: list[Sample] = []
    t0 = time.time()
    for run in runs:
        variant_info = {v: next(iter(bd.values())).doc.get("variant", {}) for v, bd in run.variants.items()}
        infos.append(RunInfo(run.label, str(run.path), run.model_id, list(run.variants), run.benchmarks,
                             dict(run.summary.get("skipped") or {}), variant_info))
        if BASE not in run.variants:
            warnings.append(f"{run.path}: no base results, nothing to compare against")
        if not run.compared_variants:
            warnings.append(f"{run.label}: only the base model was run; the report shows base values only")
        for b in run.benchmarks:
            base_bd = run.variants.get(BASE, {}).get(b)
            any_bd = base_bd or next(vd[b] for vd in run.variants.values() if b in vd)
            info = any_bd.info
            pm = info.get("primary_metric") or (any_bd.doc.get("primary") or {}).get("metric")
            benches.setdefault(b, {
                "title": info.get("title", b), "kind": info.get("kind"), "primary_metric": pm,
                "primary_description": info.get("primary_description", ""),
                "higher_is_more_biased": bool(info.get("higher_is_more_biased", True)),
                "neutral": neutral_of(any_bd.doc, pm) if pm else None,
                "outcome": info.get("outcome", "complex"),
                "quality": _is_quality(any_bd.doc),
            })
            metric_list = [pm] + [m for m in extra.get(b, []) if m != pm]
            for m in metric_list:
                base_values[(run.label, b, m)] = base_bd.metric(m) if base_bd else None
            bench, why = _bench_instance(any_bd.doc)
            for v in run.compared_variants:
                var_bd = run.variants[v].get(b)
                for m in metric_list:
                    row = Comparison(
                        model=run.label, run_dir=str(run.path), benchmark=b, title=info.get("title", b), metric=m,
                        primary=(m == pm), variant=v, outcome=info.get("outcome", "complex"),
                        higher_is_more_biased=bool(info.get("higher_is_more_biased", True)), confidence=confidence,
                        quality=benches[b]["quality"],
                        base_reported=base_bd.metric(m) if base_bd else None,
                        value_reported=var_bd.metric(m) if var_bd else None,
                    )
                    row.neutral = neutral_of(any_bd.doc, m)
                    rows.append(row)
                    if base_bd is None or var_bd is None:
                        row.base, row.value = row.base_reported, row.value_reported
                        row.ci_reason = row.test_reason = f"no {'base' if base_bd is None else v} result for {b}"
                        continue
                    if base_bd.units is None or var_bd.units is None:
                        missing = base_bd.units_path if base_bd.units is None else var_bd.units_path
                        row.base, row.value = row.base_reported, row.value_reported
                        row.change = None if row.base is None or row.value is None else row.value - row.base
                        row.rel_change = relative_change(row.base, row.value)
                        row.ci_reason = row.test_reason = f"unit records missing ({missing}): values only, no statistics"
                        continue
                    if bench is None:
                        row.base, row.value = row.base_reported, row.value_reported
                        row.change = None if row.base is None or row.value is None else row.value - row.base
                        row.rel_change = relative_change(row.base, row.value)
                        row.ci_reason = row.test_reason = why
                        continue
                    if (base_bd.info.get("options") or {}) != (var_bd.info.get("options") or {}):
                        row.notes.append(f"benchmark options differ between base and {v}; base's options are used to recompute")
                    if log:
                        log(f"comparing {run.label} · {v} · {b}.{m}")
                    try:
                        _compare_one(row, bench, base_bd, var_bd, n_boot, n_perm, seed, confidence)
                    except BiasshiftError:
                        raise
                    except Exception as exc:  # a benchmark's compute failing on a resample must not kill the report
                        row.ci_reason = row.ci_reason or f"statistics failed: {type(exc).__name__}: {exc}"
                        row.test_reason = row.test_reason or f"statistics failed: {type(exc).__name__}: {exc}"
                    grp_field = PER_GROUP_COMPARED.get(b)
                    if m != pm or grp_field is None or bench is None or base_bd is None or var_bd is None \
                            or base_bd.units is None or var_bd.units is None:
                        continue
                    groups = list(dict.fromkeys(str(u.get(grp_field)) for u in base_bd.units if u.get(grp_field) is not None))
                    for g in groups:
                        grow = Comparison(
                            model=run.label, run_dir=str(run.path), benchmark=b, title=info.get("title", b), metric=m,
                            primary=False, variant=v, outcome="complex", higher_is_more_biased=row.higher_is_more_biased,
                            confidence=confidence, quality=row.quality, neutral=row.neutral, group_field=grp_field, group=g,
                            base_reported=_num(((base_bd.doc.get("per_group") or {}).get(grp_field) or {}).get(g, {}).get(m)),
                            value_reported=_num(((var_bd.doc.get("per_group") or {}).get(grp_field) or {}).get(g, {}).get(m)),
                        )
                        rows.append(grow)
                        try:
                            _compare_one(grow, bench, _filtered(base_bd, grp_field, g), _filtered(var_bd, grp_field, g),
                                         n_boot, n_perm, seed, confidence)
                        except BiasshiftError:
                            raise
                        except Exception as exc:
                            grow.ci_reason = grow.test_reason = f"statistics failed: {type(exc).__name__}: {exc}"
        a, b_, c = _value_rows(run)
        pg += a
        rates += b_
        text += c
        smp += _samples(run, samples)
    for r in rows:  # rows without statistics still get their distance from the neutral point, for reading
        if r.neutral is not None and r.dist_base is None and r.base is not None and r.value is not None:
            r.dist_base, r.dist_value = abs(r.base - r.neutral), abs(r.value - r.neutral)
            r.dist_change = r.dist_value - r.dist_base
            r.dist_rel_change = relative_change(r.dist_base, r.dist_value)
    adj = holm([r.p_value for r in rows])
    for r, p in zip(rows, adj):
        r.p_holm = p
        r.significant = p is not None and p < alpha
    settings = {
        "n_boot": n_boot, "n_perm": n_perm, "seed": seed, "alpha": alpha, "confidence": confidence,
        "holm_family_size": sum(1 for r in rows if r.p_value is not None),
        "seconds": round(time.time() - t0, 2),
    }
    from . import diff as diff_mod
    from . import efficiency as eff_mod

    rep = Report(infos, rows, pg, rates, text, smp, settings, benches, base_values, warnings)
    rep.missing = missing
    if diff_top > 0:
        rep.diffs = [d for run in runs for d in diff_mod.run_diffs(run, diff_top)]
    rep.efficiency, rep.tradeoffs = eff_mod.build(runs, rows)
    settings["diff_top"] = diff_top
    return rep
