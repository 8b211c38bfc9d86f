"""The compression-rate sweep: bias (overall and per group) and the quality anchor against the pruning rate
(docs/report.md, "Compression-rate sweeps").

A layer over :func:`~biasshift.report.compare.build_report`'s typed :class:`Comparison` rows; it computes
no statistic of its own:

- the pruned variants are the ones whose recorded ``variant.config`` gives a sweep axis
  (:func:`biasshift.strategies.sweep_axis`: method, sparsity, pattern). A combination with one pruning
  part (``sparsegpt@0.5+int8``) is its own line, labelled with its parts and the pruning part replaced by
  its method (``sparsegpt+int8``); like every variant it is compared with base, not with the pruned-only
  variant. N:M variants (2:4, 4:8, sparsity 0.5) are separate points, never on the unstructured line;
- whole-benchmark points are the report's own rows (value, paired CI, test, Holm), unchanged;
- per-group points are the report's own per-group rows where it has them (BBQ categories). Where it has
  none, :data:`SWEEP_GROUPS` names what is compared per group (CrowS-Pairs bias types, DiscrimEval's
  per-attribute ranges); those rows are filled by the report's own paired comparison
  (:func:`~biasshift.report.compare.compare_units`, statistics from :mod:`biasshift.stats`) on the unit
  records loaded with the report's loader (:func:`~biasshift.report.compare.load_run`), and their Holm
  adjustment runs over the report's whole family plus these rows (the report's own rows keep theirs).

Only Holm-significant changes are coloured or called more/less biased, in every format.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BiasshiftError, ConfigError
from ..stats import holm
from ..strategies import sweep_axis
from .compare import BASE, Comparison, Report, RunData, _bench_instance, compare_units, group_units, load_run, \
    neutral_of, unit_groups
from .render import finite_json, fmt_change, fmt_num, heading_direction, md_cell, md_table, records_csv

SWEEP_SCHEMA = "biasshift-sweep/1"
UNSTRUCTURED = "unstructured"

#: per-group comparisons the sweep adds where build_report has none for a benchmark:
#: ("units", FIELD): the primary metric recomputed on each group's units (CrowS-Pairs bias types);
#: ("metrics", NAMES): whole-sample per-attribute metrics, each a mean over units of the benchmark's own
#: value for that unit alone (DiscrimEval: mean over questions of the max - min p(yes) across one attribute).
SWEEP_GROUPS: dict[str, tuple[str, Any]] = {
    "crows_pairs": ("units", "bias_type"),
    "discrim_eval": ("metrics", ("max_min_age", "max_min_gender", "max_min_race")),
}


# ----------------------------------------------------------------------------------------------- records
@dataclass
class SweepVariant:
    """One variant on the sweep axis."""

    model: str
    variant: str
    series: str  # the line: the method, or a combination's parts with the pruning part as its method
    method: str
    sparsity: float
    pattern: str  # 'unstructured' or 'N:M'
    combination: bool = False

    @property
    def nm(self) -> bool:
        return self.pattern != UNSTRUCTURED


@dataclass
class SweepPoint:
    """One variant x benchmark (x group) comparison on the sweep axis; ``row`` holds the statistics."""

    model: str
    benchmark: str
    series: str
    method: str
    sparsity: float
    pattern: str
    variant: str
    row: Comparison
    group_field: str | None = None  # None: the whole benchmark
    group: str | None = None
    source: str = "report"  # 'report': build_report's own row; 'sweep': a per-group row computed here

    @property
    def nm(self) -> bool:
        return self.pattern != UNSTRUCTURED

    @property
    def group_label(self) -> str:
        return "all" if self.group is None else f"{self.group_field}={self.group}"

    def to_dict(self) -> dict[str, Any]:
        r = self.row
        lo, hi = r.bias_ci
        return {
            "model": self.model, "benchmark": self.benchmark, "metric": r.metric, "group_field": self.group_field,
            "group": self.group, "series": self.series, "method": self.method, "sparsity": self.sparsity,
            "pattern": self.pattern, "variant": self.variant, "source": self.source, "quality": r.quality,
            "base": r.base, "value": r.value, "change": r.change, "rel_change": r.rel_change, "ci_low": r.ci_low,
            "ci_high": r.ci_high, "neutral": r.neutral, "bias_change": r.bias_change, "bias_ci_low": lo,
            "bias_ci_high": hi, "test": r.test, "p_value": r.p_value, "p_holm": r.p_holm, "significant": r.significant,
            "bias_direction": r.bias_direction, "estimate_direction": r.estimate_direction, "n_paired": r.n_paired,
            "reason": r.undefined_reason or r.test_reason or r.ci_reason, "notes": list(r.notes),
        }


@dataclass
class Sweep:
    variants: list[SweepVariant]
    points: list[SweepPoint]
    benchmarks: dict[str, dict[str, Any]]  # report.benchmarks
    settings: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    @property
    def alpha(self) -> float:
        return float(self.settings["alpha"])

    def models(self) -> list[str]:
        return list(dict.fromkeys(v.model for v in self.variants))

    def series(self, model: str) -> list[str]:
        return list(dict.fromkeys(v.series for v in self.variants if v.model == model))

    def benchmarks_of(self, model: str) -> list[str]:
        """Benchmarks with points, bias benchmarks first and quality anchors last."""
        bs = list(dict.fromkeys(p.benchmark for p in self.points if p.model == model))
        return sorted(bs, key=lambda b: bool(self.benchmarks.get(b, {}).get("quality")))

    def groups(self, model: str, benchmark: str) -> list[tuple[str, str]]:
        """(group_field, group) of the per-group points in first-seen order."""
        return list(dict.fromkeys((p.group_field, p.group) for p in self.points if p.model == model
                                  and p.benchmark == benchmark and p.group is not None))  # type: ignore[misc]

    def select(self, model: str, benchmark: str, series: str | None = None, group: tuple[str, str] | None = None,
               nm: bool | None = None) -> list[SweepPoint]:
        """The points of one line (``nm=False``: unstructured, by sparsity) or the N:M points (``nm=True``)."""
        out = [p for p in self.points if p.model == model and p.benchmark == benchmark
               and (series is None or p.series == series)
               and ((p.group_field, p.group) == group if group is not None else p.group is None)
               and (nm is None or p.nm == nm)]
        return sorted(out, key=lambda p: (p.nm, p.sparsity, p.pattern))

    def quality_benchmark(self, model: str) -> str | None:
        return next((b for b in self.benchmarks_of(model) if self.benchmarks.get(b, {}).get("quality")), None)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SWEEP_SCHEMA, "settings": self.settings, "notes": self.notes,
                "variants": [asdict(v) for v in self.variants], "benchmarks": self.benchmarks,
                "points": [p.to_dict() for p in self.points]}


# ----------------------------------------------------------------------------------------------- axis
def _series_of(config: dict[str, Any], method: str) -> tuple[str, bool]:
    """The line label of a variant: its method, or a combination's parts with the pruning part as its method."""
    order = config.get("order")
    if not isinstance(order, list):
        return method, False
    parts = []
    replaced = False
    for part in order:
        if not replaced and sweep_axis(config.get(part)) is not None:
            parts.append(method)
            replaced = True
        else:
            parts.append(str(part))
    return "+".join(parts), True


def sweep_variants(report: Report) -> tuple[list[SweepVariant], list[str]]:
    """Every variant with a sweep axis (per run), and notes on the ones left out."""
    out: list[SweepVariant] = []
    notes: list[str] = []
    for run in report.runs:
        seen: dict[tuple[str, float, str], str] = {}
        for v in run.variants:
            if v == BASE:
                continue
            cfg = (run.variant_info.get(v) or {}).get("config")
            axis = sweep_axis(cfg)
            if axis is None:
                continue
            method, sparsity, pattern = axis
            series, combo = _series_of(cfg, method)  # type: ignore[arg-type]
            key = (series, round(sparsity, 9), pattern)
            if key in seen:
                notes.append(f"{run.label}: {v} has the same method, rate and pattern as {seen[key]}; only {seen[key]} is "
                             f"on the sweep")
                continue
            seen[key] = v
            out.append(SweepVariant(run.label, v, series, method, float(sparsity), pattern, combo))
    return out, notes


def has_sweep(variants: Sequence[SweepVariant]) -> bool:
    """True when one run has >= 2 unstructured rates of one line (method or combination)."""
    rates: dict[tuple[str, str], set[float]] = {}
    for v in variants:
        if not v.nm:
            rates.setdefault((v.model, v.series), set()).add(round(v.sparsity, 9))
    return any(len(r) >= 2 for r in rates.values())


# ----------------------------------------------------------------------------------------------- extra group rows
class _PerUnitMetric:
    """A benchmark seen through one of its whole-sample metrics, with the unit outcome = that metric of the
    unit alone (the benchmark's own ``compute([unit])``). ``compare_units`` then takes its verified mean path
    only where the metric equals the mean of these outcomes on the data at hand (checked against
    ``compute`` on the full sample and on resamples), else it recomputes the metric per resample."""

    def __init__(self, bench: Any, metric: str) -> None:
        self._bench, self._metric = bench, metric
        self.name = bench.name
        self._cache: dict[int, Any] = {}

    def compute(self, units: Sequence[dict[str, Any]]) -> Any:
        return self._bench.compute(units)

    def unit_outcome(self, unit: dict[str, Any]) -> float | None:
        k = id(unit)
        if k not in self._cache:
            v = self._bench.compute([unit]).metrics.get(self._metric)
            self._cache[k] = None if v is None else float(v)
        return self._cache[k]

    def weighted_metric(self, metric: str, units: Sequence[dict[str, Any]]) -> Any:
        return self._bench.weighted_metric(metric, units)


def _guarded(row: Comparison, *args: Any, **kwargs: Any) -> None:
    """``compare_units(row, *args, **kwargs)``, like the report's own rows: a failure is the row's reason."""
    try:
        compare_units(row, *args, **kwargs)
    except BiasshiftError:
        raise
    except Exception as exc:  # one benchmark's compute failing on a subset must not kill the report
        row.ci_reason = row.ci_reason or f"statistics failed: {type(exc).__name__}: {exc}"
        row.test_reason = row.test_reason or f"statistics failed: {type(exc).__name__}: {exc}"


def _extra_group_rows(run: RunData, label: str, variant: str, benchmark: str, settings: dict[str, Any]
                      ) -> list[tuple[str, str, Comparison]]:
    """(group_field, group, row) for the per-group comparisons of SWEEP_GROUPS, filled by compare_units."""
    spec = SWEEP_GROUPS.get(benchmark)
    base_bd = run.variants.get(BASE, {}).get(benchmark)
    var_bd = run.variants.get(variant, {}).get(benchmark)
    if spec is None or base_bd is None or var_bd is None or base_bd.units is None or var_bd.units is None:
        return []
    bench, _why = _bench_instance(base_bd.doc)
    if bench is None:
        return []
    info = base_bd.info
    pm = info.primary_metric
    n_boot, n_perm, seed, conf = settings["n_boot"], settings["n_perm"], settings["seed"], settings["confidence"]
    kind, arg = spec
    out: list[tuple[str, str, Comparison]] = []

    def new_row(metric: str, outcome: str, gfield: str | None, group: str | None, b_rep: Any, v_rep: Any) -> Comparison:
        # primary=True selects the paired test of the benchmark's outcome and its verified vectorised paths;
        # the row is marked non-primary once filled
        return Comparison(model=label, run_dir=str(run.path), benchmark=benchmark, title=info.title, metric=metric,
                          primary=True, variant=variant, outcome=outcome, higher_is_more_biased=info.higher_is_more_biased,
                          confidence=conf, quality=False, neutral=neutral_of(base_bd.doc, metric), group_field=gfield,
                          group=group, base_reported=b_rep, value_reported=v_rep)

    if kind == "units":
        for g in unit_groups(base_bd.units, arg):
            row = new_row(pm, info.outcome, arg, g, base_bd.doc.group_metric(arg, g, pm), var_bd.doc.group_metric(arg, g, pm))
            gb, gv = group_units(base_bd.units, arg, g), group_units(var_bd.units, arg, g)
            _guarded(row, bench, base_bd.doc, gb, var_bd.doc, gv, n_boot, n_perm, seed, conf, reuse_doc_values=False)
            row.primary = False
            out.append((arg, g, row))
    else:
        for m in arg:
            if m not in base_bd.doc.metrics:
                continue
            view = _PerUnitMetric(bench, m)
            defined = all(view.unit_outcome(u) is not None for u in base_bd.units + var_bd.units)
            # a whole-sample metric (no subset of units): the row has no group; the point names the attribute
            row = new_row(m, "continuous" if defined else "complex", None, None, base_bd.metric(m), var_bd.metric(m))
            if not defined:
                row.primary = False  # some unit has no value alone: recompute the metric per resample
            _guarded(row, view, base_bd.doc, base_bd.units, var_bd.doc, var_bd.units, n_boot, n_perm, seed, conf,
                     reuse_doc_values=False)  # values recomputed from the units, like every group row
            row.primary = False
            out.append(("attribute", m.rsplit("_", 1)[-1], row))
    return out


# ----------------------------------------------------------------------------------------------- build
def build_sweep(report: Report, runs: Sequence[RunData] | None = None) -> Sweep | None:
    """The sweep view of ``report``; None when no run has >= 2 unstructured rates of one pruning method.

    ``runs``: the report's run directories already loaded (in ``report.runs`` order); otherwise they are
    loaded with :func:`load_run` where per-group rows must be computed from unit records."""
    variants, notes = sweep_variants(report)
    if not has_sweep(variants):
        return None
    settings = {k: report.settings.get(k) for k in ("n_boot", "n_perm", "seed", "alpha", "confidence")}
    settings["holm_family_report"] = report.settings.get("holm_family_size")
    points: list[SweepPoint] = []
    extra: list[SweepPoint] = []
    loaded: dict[int, RunData | None] = {}
    for i, info in enumerate(report.runs):
        mine = [v for v in variants if v.model == info.label]
        if not mine:
            continue
        for b in info.benchmarks:
            pm = report.benchmarks.get(b, {}).get("primary_metric")
            report_groups = any(r.model == info.label and r.benchmark == b and r.group is not None for r in report.rows)
            for sv in mine:
                ax = dict(model=info.label, benchmark=b, series=sv.series, method=sv.method, sparsity=sv.sparsity,
                          pattern=sv.pattern, variant=sv.variant)
                row = report.row(info.label, b, pm, sv.variant) if pm else None
                if row is None:
                    continue
                points.append(SweepPoint(row=row, **ax))
                for r in report.rows:
                    if (r.model, r.benchmark, r.metric, r.variant) == (info.label, b, pm, sv.variant) and r.group is not None:
                        points.append(SweepPoint(row=r, group_field=r.group_field, group=r.group, **ax))
                if report_groups or b not in SWEEP_GROUPS:
                    continue
                if i not in loaded:
                    try:
                        loaded[i] = runs[i] if runs is not None else load_run(info.path)
                    except BiasshiftError as exc:
                        notes.append(f"{info.label}: per-group rows not computed, the run directory cannot be read ({exc})")
                        loaded[i] = None
                if loaded[i] is None:
                    continue
                for gfield, g, r in _extra_group_rows(loaded[i], info.label, sv.variant, b, settings):
                    extra.append(SweepPoint(row=r, group_field=gfield, group=g, source="sweep", **ax))
    if extra:  # Holm over the report's whole family plus the rows computed here; the report's rows keep theirs
        adj = holm([r.p_value for r in report.rows] + [p.row.p_value for p in extra])[len(report.rows):]
        for p, a in zip(extra, adj):
            p.row.p_holm = a
            p.row.significant = a is not None and a < float(settings["alpha"])
        notes.append(f"{len(extra)} per-group comparison(s) were computed for the sweep (source 'sweep'); their Holm "
                     f"adjustment is over the report's {settings['holm_family_report']} tests plus these "
                     f"{sum(1 for p in extra if p.row.p_value is not None)}; the report's own rows keep the report's.")
    settings["holm_family_sweep"] = (settings["holm_family_report"] or 0) + sum(1 for p in extra if p.row.p_value is not None)
    combos = sorted({v.series for v in variants if v.combination})
    if combos:
        notes.append(f"combination(s) {', '.join(combos)}: each is its own line, compared with base (not with the "
                     f"pruned-only variant)")
    return Sweep(variants, points + extra, dict(report.benchmarks), settings, notes)


# ----------------------------------------------------------------------------------------------- tables
def _measure(info: dict[str, Any], metric: str) -> str:
    neutral = info.get("neutral") if metric == info.get("primary_metric") else None
    if neutral is not None:
        return f"change of |{metric} - {neutral:g}| (distance from unbiased)"
    return f"change of {metric}"


def _axis_label(info: dict[str, Any], metric: str) -> str:
    neutral = info.get("neutral") if metric == info.get("primary_metric") else None
    return f"change of |{metric} - {neutral:g}| vs base" if neutral is not None else f"change of {metric} vs base"


def _verdict_word(r: Comparison) -> str:
    """'more biased*' etc. only for a Holm-significant change; '' otherwise."""
    if not r.significant or not r.bias_change:
        return ""
    return f"{r.bias_direction}*"


def cell_text(p: SweepPoint | None) -> str:
    if p is None:
        return "–"
    r = p.row
    if r.value is None or r.bias_change is None:
        return "n/a"
    scale = max(1.0, abs(r.value), abs(r.base or 0.0))

    def num(x: float) -> str:  # rounding noise of a difference of equal distances reads 0
        return fmt_change(0.0 if abs(x) < 1e-9 * scale else x)

    lo, hi = r.bias_ci
    ci = "" if lo is None or hi is None else f" [{num(lo)}, {num(hi)}]"
    word = _verdict_word(r)
    return f"{fmt_num(r.value)} ({num(r.bias_change)}{ci})" + (f" {word}" if word else "")


def cell_class(p: SweepPoint | None) -> str:
    """'worse' / 'better' for a Holm-significant change only (red / blue), else ''."""
    if p is None or not p.row.significant or not p.row.bias_change:
        return ""
    return "worse" if p.row.worse else "better"


def _columns(sweep: Sweep, model: str, benchmark: str) -> list[tuple[str, float, str]]:
    """(label, sparsity, pattern) columns: unstructured rates ascending, then the N:M patterns."""
    cols = {(p.sparsity, p.pattern) for p in sweep.points if p.model == model and p.benchmark == benchmark}
    uns = sorted(c for c in cols if c[1] == UNSTRUCTURED)
    nm = sorted(c for c in cols if c[1] != UNSTRUCTURED)
    return [(f"{s:g}", s, pat) for s, pat in uns] + [(f"{pat} ({s:g})", s, pat) for s, pat in nm]


@dataclass
class SweepTable:
    model: str
    benchmark: str
    title: str
    header: list[str]
    rows: list[list[str]]
    classes: list[list[str]]


def sweep_tables(sweep: Sweep) -> list[SweepTable]:
    """One wide table per model x benchmark: rows = line x group ('all' first), columns = base, rates, N:M."""
    out = []
    for model in sweep.models():
        for b in sweep.benchmarks_of(model):
            info = sweep.benchmarks.get(b, {})
            metric = info.get("primary_metric", "")
            cols = _columns(sweep, model, b)
            header = ["line", "group", "n", "base"] + [c[0] for c in cols]
            rows, classes = [], []
            for group in [None] + sweep.groups(model, b):
                for s in sweep.series(model):
                    pts = sweep.select(model, b, s, group)
                    if not pts:
                        continue
                    at = {(p.sparsity, p.pattern): p for p in pts}
                    cells = [at.get((c[1], c[2])) for c in cols]
                    label = "all" if group is None else f"{group[0]}={group[1]}"
                    n = sorted({p.row.n_paired for p in pts})
                    rows.append([s, label, "-".join(str(x) for x in (n[0], n[-1]) if x is not None) if len(n) > 1 else str(n[0]),
                                 fmt_num(pts[0].row.base)] + [cell_text(p) for p in cells])
                    classes.append(["", "", "", ""] + [cell_class(p) for p in cells])
            title = (f"{info.get('title', b)}: {metric} ({heading_direction(info)}); cells: value ({_measure(info, metric)} "
                     f"vs base [{int(round(100 * float(sweep.settings['confidence'])))}% paired CI])")
            out.append(SweepTable(model, b, title, header, rows, classes))
    return out


def legend(sweep: Sweep) -> str:
    s = sweep.settings
    return (f"Pruning rate (fraction of zero weights) on the columns; N:M patterns are separate columns, not on the "
            f"unstructured line. Each cell is the variant's value and its change vs base with the paired "
            f"{int(round(100 * float(s['confidence'])))}% bootstrap CI ({s['n_boot']} resamples, seed {s['seed']}); where a "
            f"benchmark declares a neutral point the change is that of the distance from it. Only changes significant "
            f"after Holm's correction (alpha {s['alpha']}) are called more/less biased (marked *, coloured); any other is "
            f"plain: no significant change. n/a = undefined, – = not run.")


# ----------------------------------------------------------------------------------------------- figures
_LINE_COLOURS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666")  # Dark2: no red/blue
_WORSE, _BETTER = "#c62828", "#1565c0"
_NM_MARKERS = ("D", "s", "^", "v", "P")
MAX_GROUP_BANDS = 3  # a per-group panel with more groups draws no CI bands (they would hide each other)


def _label(s: object) -> str:
    return str(s).replace("$", r"\$")


def _draw(ax: Any, pts: list[SweepPoint], colour: str, label: str, nm_patterns: list[str], offset: float,
          band_on: bool = True, style: str = "-") -> None:
    """One line (base anchor at 0, unstructured points by rate, CI band) and its N:M points apart."""
    uns = [p for p in pts if not p.nm and p.row.bias_change is not None]
    xs = [0.0] + [p.sparsity for p in uns]
    ys = [0.0] + [float(p.row.bias_change) for p in uns]  # type: ignore[arg-type]
    ax.plot(xs, ys, style, color=colour, lw=1.6, label=_label(label), zorder=2)
    band = [(p.sparsity, p.row.bias_ci) for p in uns if p.row.bias_ci[0] is not None and p.row.bias_ci[1] is not None]
    if band and band_on:
        bx = [0.0] + [x for x, _ in band]
        ax.fill_between(bx, [0.0] + [ci[0] for _, ci in band], [0.0] + [ci[1] for _, ci in band], color=colour,
                        alpha=0.15, lw=0, zorder=1)
    for p in uns:
        _marker(ax, p, p.sparsity, colour, "o")
    for p in pts:
        if not p.nm or p.row.bias_change is None:
            continue
        x = p.sparsity + offset
        lo, hi = p.row.bias_ci
        if lo is not None and hi is not None:
            ax.errorbar([x], [p.row.bias_change], yerr=[[p.row.bias_change - lo], [hi - p.row.bias_change]], fmt="none",
                        ecolor=colour, elinewidth=1, capsize=3, zorder=2)
        mk = _NM_MARKERS[nm_patterns.index(p.pattern) % len(_NM_MARKERS)] if p.pattern in nm_patterns else "D"
        _marker(ax, p, x, colour, mk)


def _marker(ax: Any, p: SweepPoint, x: float, colour: str, marker: str) -> None:
    cls = cell_class(p)
    face = _WORSE if cls == "worse" else _BETTER if cls == "better" else "white"
    ax.plot([x], [p.row.bias_change], marker=marker, ms=8 if cls else 6, mfc=face, mec=colour, mew=1.6, ls="none", zorder=3)


def figure(sweep: Sweep, model: str, benchmark: str) -> bytes | None:
    """PNG: the benchmark's change vs base per line (x = rate), the quality anchor on the same axis, and one
    per-group panel per line (one curve per group). Filled red/blue = Holm-significant more/less bias
    (worse/better quality); hollow = not significant; N:M points are separate markers."""
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    series = [s for s in sweep.series(model) if sweep.select(model, benchmark, s)]
    if not series:
        return None
    info = sweep.benchmarks.get(benchmark, {})
    metric = info.get("primary_metric", "")
    quality = sweep.quality_benchmark(model)
    quality = quality if quality != benchmark and quality is not None and sweep.select(model, quality) else None
    groups = sweep.groups(model, benchmark)
    gseries = [s for s in series if any(sweep.select(model, benchmark, s, g) for g in groups)]
    nm_patterns = sorted({p.pattern for p in sweep.points if p.model == model and p.nm})
    rates = sorted({p.sparsity for p in sweep.points if p.model == model})
    rc = {"font.size": 9, "axes.titlesize": 10}
    if "text.parse_math" in matplotlib.rcParams:
        rc["text.parse_math"] = False
    with matplotlib.rc_context(rc):
        ntop = 2 if quality else 1
        nrows = 2 if gseries else 1
        width = max(5.5 * ntop, 4.2 * max(1, len(gseries)))
        fig = Figure(figsize=(width, 3.8 * nrows + 0.6))
        gs = fig.add_gridspec(nrows, 1, hspace=0.45)
        top = gs[0].subgridspec(1, ntop, wspace=0.3)

        def style(ax: Any, title: str, ylabel: str) -> None:
            ax.axhline(0, color="#999999", lw=0.8, zorder=0)
            ax.set_title(_label(title))
            ax.set_xlabel("pruning rate (fraction of zero weights)")
            ax.set_ylabel(_label(ylabel))
            ax.set_xticks([0.0] + rates)
            ax.grid(alpha=0.3)

        ax = fig.add_subplot(top[0, 0])
        for k, s in enumerate(series):
            _draw(ax, sweep.select(model, benchmark, s), _LINE_COLOURS[k % len(_LINE_COLOURS)], s, nm_patterns,
                  0.012 * (k - (len(series) - 1) / 2))
        style(ax, f"{info.get('title', benchmark)}: all units", _axis_label(info, metric))
        handles = [Line2D([], [], color=_LINE_COLOURS[k % len(_LINE_COLOURS)], lw=1.6, label=_label(s)) for k, s in enumerate(series)]
        handles += [Line2D([], [], marker="o", ls="none", mfc=_WORSE, mec="#333333", label="significant, more bias / worse"),
                    Line2D([], [], marker="o", ls="none", mfc=_BETTER, mec="#333333", label="significant, less bias / better"),
                    Line2D([], [], marker="o", ls="none", mfc="white", mec="#333333", label="not significant (Holm)")]
        handles += [Line2D([], [], marker=_NM_MARKERS[i % len(_NM_MARKERS)], ls="none", mfc="white", mec="#333333",
                           label=f"{pat} (not on the line)") for i, pat in enumerate(nm_patterns)]
        ax.legend(handles=handles, fontsize=7, loc="best")
        if quality:
            qinfo = sweep.benchmarks.get(quality, {})
            qa = fig.add_subplot(top[0, 1], sharex=ax)
            for k, s in enumerate(series):
                pts = sweep.select(model, quality, s)
                if pts:
                    _draw(qa, pts, _LINE_COLOURS[k % len(_LINE_COLOURS)], s, nm_patterns, 0.012 * (k - (len(series) - 1) / 2))
            style(qa, f"quality anchor: {quality} (not bias; higher = worse)",
                  _axis_label(qinfo, qinfo.get("primary_metric", "")))
        if gseries:
            bottom = gs[1].subgridspec(1, len(gseries), wspace=0.3)
            for j, s in enumerate(gseries):
                gax = fig.add_subplot(bottom[0, j], sharey=None)
                for k, g in enumerate(groups):
                    pts = sweep.select(model, benchmark, s, g)
                    if pts:
                        _draw(gax, pts, _LINE_COLOURS[k % len(_LINE_COLOURS)], g[1], nm_patterns,
                              band_on=len(groups) <= MAX_GROUP_BANDS, style="-" if k < len(_LINE_COLOURS) else "--",
                              offset=0.012 * (k - (len(groups) - 1) / 2))
                ylab = _axis_label(info, metric) if groups[0][0] != "attribute" else f"change of {metric}_<attribute> vs base"
                more = "" if len(groups) <= MAX_GROUP_BANDS else " (CIs in the table)"
                style(gax, f"{s}: per {groups[0][0]}{more}", ylab)
                gax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.suptitle(_label(f"{model} · {info.get('title', benchmark)} vs pruning rate (paired "
                            f"{int(round(100 * float(sweep.settings['confidence'])))}% CI bands)"), fontsize=11)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        return buf.getvalue()


def figure_name(sweep: Sweep, model: str, benchmark: str) -> str:
    """A safe PNG file name (model and benchmark names come from run directories)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", benchmark).strip("._") or "benchmark"
    models = sweep.models()
    return f"sweep-{safe}.png" if len(models) == 1 else f"sweep-{models.index(model) + 1}-{safe}.png"


# ----------------------------------------------------------------------------------------------- renderers
def to_markdown(sweep: Sweep, images: bool = False, heading: str = "##") -> str:
    """The sweep section in Markdown; ``images``: link the PNGs written next to it (see :func:`write_sweep`)."""
    out = [f"{heading} Compression-rate sweep", "", md_cell(legend(sweep)), ""]
    for t in sweep_tables(sweep):
        out += [f"{heading}# {md_cell(t.model)} · {md_cell(t.title)}", "", md_table(t.header, t.rows), ""]
        if images and not sweep.benchmarks.get(t.benchmark, {}).get("quality"):
            name = figure_name(sweep, t.model, t.benchmark)
            out += [f"![{md_cell(t.benchmark)} vs pruning rate]({name})", ""]
    if sweep.notes:
        out += ["Notes:", ""] + [f"- {md_cell(n)}" for n in sweep.notes] + [""]
    return "\n".join(out)


CSV_FIELDS = ["model", "benchmark", "metric", "group_field", "group", "series", "method", "sparsity", "pattern", "variant",
              "source", "quality", "base", "value", "change", "rel_change", "ci_low", "ci_high", "neutral", "bias_change",
              "bias_ci_low", "bias_ci_high", "test", "p_value", "p_holm", "significant", "bias_direction",
              "estimate_direction", "n_paired", "reason", "notes"]


def to_csv(sweep: Sweep) -> str:
    """Long form: one row per point (variant x benchmark x group); missing values are empty cells."""
    return records_csv(sweep.points, CSV_FIELDS)


def to_json(sweep: Sweep) -> str:
    """Everything, machine-readable (``"schema": "biasshift-sweep/1"``); a missing value is null."""
    return json.dumps(finite_json(sweep.to_dict()), indent=1, ensure_ascii=False, allow_nan=False, default=str)


def html_section(sweep: Sweep, figures: bool = True) -> str:
    """The body of the HTML sweep section (tables, figures as inline PNG); every run-derived text is escaped."""
    import base64

    from .html import e

    body = [f'<p class="legend">{e(legend(sweep))} Red: significantly more biased (or worse quality); blue: '
            f'significantly less biased (or better quality).</p>']
    for t in sweep_tables(sweep):
        body.append(f"<h3>{e(t.model)} · {e(t.title)}</h3><table><thead><tr>")
        body += [f'<th class="{"l" if i < 2 else ""}">{e(h)}</th>' for i, h in enumerate(t.header)]
        body.append("</tr></thead><tbody>")
        for row, cls in zip(t.rows, t.classes):
            body.append("<tr>" + "".join(
                f'<td class="{" ".join(x for x in ("l" if i < 2 else "", c, "na" if v in ("n/a", "–") else "") if x)}">{e(v)}</td>'
                for i, (v, c) in enumerate(zip(row, cls))) + "</tr>")
        body.append("</tbody></table>")
        if figures and not sweep.benchmarks.get(t.benchmark, {}).get("quality"):
            png = figure(sweep, t.model, t.benchmark)
            if png:
                body.append(f'<img alt="{e(t.benchmark)} vs pruning rate" '
                            f'src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">')
    if sweep.notes:
        body.append("<ul>" + "".join(f'<li class="note">{e(n)}</li>' for n in sweep.notes) + "</ul>")
    return "".join(body)


def to_html(sweep: Sweep, figures: bool = True) -> str:
    """A self-contained HTML page holding the sweep section only (same CSS and CSP as the report)."""
    from .html import CSP, CSS

    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f"<title>biasshift sweep</title><style>{CSS}</style></head><body><h1>biasshift: compression-rate sweep</h1>"
            f'<section id="sweep">{html_section(sweep, figures)}</section></body></html>\n')


def to_terminal(sweep: Sweep, console: Any) -> None:
    from rich.table import Table
    from rich.text import Text

    styles = {"worse": "bold red", "better": "bold blue", "": ""}
    for t in sweep_tables(sweep):
        table = Table(title=Text(f"sweep · {t.model} · {t.title}"))
        for i, h in enumerate(t.header):
            table.add_column(Text(h), justify="left" if i < 2 else "right", no_wrap=i < 2)
        for row, cls in zip(t.rows, t.classes):
            table.add_row(*[Text(v, style=styles.get(c, "")) for v, c in zip(row, cls)])
        console.print(table)
    console.print(Text(legend(sweep)))
    for n in sweep.notes:
        console.print(Text(f"note: {n}", style="yellow"))


def write_figures(sweep: Sweep, out: Path) -> list[Path]:
    written = []
    for model in sweep.models():
        for b in sweep.benchmarks_of(model):
            if sweep.benchmarks.get(b, {}).get("quality"):
                continue  # drawn in every bias benchmark's figure, on the same axis
            png = figure(sweep, model, b)
            if png:
                p = out / figure_name(sweep, model, b)
                p.write_bytes(png)
                written.append(p)
    return written


SWEEP_FORMATS = ("terminal", "md", "csv", "json", "html")


def parse_sweep_formats(spec: str | Iterable[str]) -> list[str]:
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    alias = {"markdown": "md", "htm": "html", "term": "terminal"}
    out: list[str] = []
    for p in parts:
        p = alias.get(p.strip().lower(), p.strip().lower())
        if not p:
            continue
        if p == "all":
            return list(SWEEP_FORMATS)
        if p not in SWEEP_FORMATS:
            raise ConfigError(f"unknown sweep format {p!r}; choose from {', '.join(SWEEP_FORMATS)} (comma-separated)")
        if p not in out:
            out.append(p)
    if not out:
        raise ConfigError("--format is empty")
    return out


def write_sweep(sweep: Sweep, out: str | Path, formats: Iterable[str] = ("md", "csv", "json", "html"),
                console: Any = None) -> list[Path]:
    """sweep.md (+ the PNGs it links), sweep.csv, sweep.json, sweep.html (self-contained); 'terminal' prints."""
    fmts = parse_sweep_formats(list(formats))
    out = Path(out)
    written: list[Path] = []
    if any(f != "terminal" for f in fmts):
        out.mkdir(parents=True, exist_ok=True)
    if "md" in fmts:
        written += write_figures(sweep, out)
    for f, name, text in (("md", "sweep.md", lambda: "# biasshift sweep\n\n" + to_markdown(sweep, images=True)),
                          ("csv", "sweep.csv", lambda: to_csv(sweep)), ("json", "sweep.json", lambda: to_json(sweep)),
                          ("html", "sweep.html", lambda: to_html(sweep))):
        if f in fmts:
            p = out / name
            p.write_text(text(), encoding="utf-8")
            written.append(p)
    if "terminal" in fmts and console is not None:
        to_terminal(sweep, console)
    return written


__all__ = ["SWEEP_GROUPS", "SWEEP_SCHEMA", "SWEEP_FORMATS", "Sweep", "SweepPoint", "SweepTable", "SweepVariant",
           "build_sweep", "figure", "has_sweep", "html_section", "parse_sweep_formats", "sweep_tables", "sweep_variants",
           "to_csv", "to_html", "to_json", "to_markdown", "to_terminal", "write_figures", "write_sweep"]
