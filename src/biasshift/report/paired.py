"""The paired base-vs-variant comparison: pure functions of unit records and result documents that fill
:class:`~.model.Comparison` records (docs/report.md, docs/statistics.md).

Pairing is by the ``unit`` field of the unit records: units present on one side only are dropped (and
counted), and base and variant values are recomputed on the paired units with the benchmark's own
``compute``, so value, change, CI and test all describe the same units.

Which test:
- ``binary`` (primary metric): exact McNemar on ``unit_outcome`` of the paired units;
- ``continuous`` (primary metric): sign-flip permutation test on the paired unit outcomes;
- ``complex``, and any non-primary metric: paired permutation test recomputing the whole metric;
- a metric with a neutral point: paired permutation test of the change of |value - neutral|.

The bootstrap always resamples paired units. It uses a vectorised path when one applies and is
verified against ``compute`` on the data at hand (metric = 1 or 100 x mean of the unit outcomes; a
benchmark's own weighted metric, see :mod:`.fast`), and otherwise recomputes the metric with
``compute`` on every resample. Statistics come from :mod:`biasshift.stats`; Holm runs in the
orchestrator (:mod:`.compare`) over the whole table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .. import benchmarks as bench_registry
from ..benchmarks.base import Benchmark
from ..errors import BiasshiftError
from ..results import ResultDoc, parse_result
from ..stats import mcnemar_exact, paired_bootstrap, paired_bootstrap_mean, paired_permutation_mean, \
    paired_permutation_test, relative_change
from . import fast
from ..results import finite_number as _num
from .model import Comparison

#: benchmarks whose primary metric is also compared (and gated) per group: benchmark -> unit / per_group field.
#: BBQ's s_amb is a mean over categories, in which +0.2 and -0.2 cancel to "unbiased".
PER_GROUP_COMPARED = {"bbq": "category"}


# ----------------------------------------------------------------------------------------------- documents
def _as_doc(doc: ResultDoc | Mapping[str, Any]) -> ResultDoc:
    return doc if isinstance(doc, ResultDoc) else parse_result(dict(doc))


def _bench_instance(doc: ResultDoc | Mapping[str, Any]) -> tuple[Benchmark | None, str | None]:
    """The benchmark of a result document rebuilt with its stored options, else (None, why)."""
    info = _as_doc(doc).benchmark
    try:
        cls = bench_registry.get(info.name)
    except BiasshiftError:
        return None, f"benchmark {info.name!r} is not known to this biasshift version: values only, no statistics"
    try:
        return cls(info.options), None
    except BiasshiftError as exc:
        return None, f"cannot rebuild benchmark {info.name} with the stored options ({exc}): values only, no statistics"


def bench_instance(doc: ResultDoc) -> tuple[Benchmark | None, str | None]:
    return _bench_instance(doc)


def _is_quality(doc: ResultDoc) -> bool:
    """A quality anchor (perplexity), not a bias measure: from the document (an extra key), else the class."""
    extra = doc.benchmark.model_extra or {}
    if "is_quality_metric" in extra:
        return bool(extra["is_quality_metric"])
    try:
        return bool(getattr(bench_registry.get(doc.benchmark.name), "is_quality_metric", False))
    except BiasshiftError:
        return False


_UNDECLARED = object()


def _neutral(name: Any, pm: Any, declared: Any, metric: str) -> float | None:
    if not pm or not (metric == pm or metric.startswith(str(pm) + "_")):
        return None
    if declared is not _UNDECLARED:
        return _num(declared)
    try:
        return _num(getattr(bench_registry.get(name), "neutral", None))
    except BiasshiftError:
        return None


def neutral_of(doc: ResultDoc | Mapping[str, Any], metric: str) -> float | None:
    """The neutral (unbiased) value of ``metric``: the benchmark's ``neutral`` (from the document, else the
    class: documents written before 2026-12-01 do not declare it), for its primary metric and the variants
    of it named ``<primary>_...`` (e.g. the sum-score CrowS percentage, BBQ's pooled s_amb); None for any
    other metric. ``doc`` may also be a partial document as a mapping (only ``benchmark`` is read)."""
    if isinstance(doc, ResultDoc):
        info = doc.benchmark
        return _neutral(info.name, info.primary_metric, info.neutral if info.declares_neutral else _UNDECLARED, metric)
    info_map = doc["benchmark"] if isinstance(doc.get("benchmark"), Mapping) else {}
    primary = doc["primary"] if isinstance(doc.get("primary"), Mapping) else {}
    pm = info_map["primary_metric"] if "primary_metric" in info_map else primary.get("metric")
    return _neutral(info_map.get("name"), pm, info_map["neutral"] if "neutral" in info_map else _UNDECLARED, metric)


_UNUSABLE = ("refusal", "multiple", "no_response", "unparseable", "empty", "undefined")


def why_undefined(doc: ResultDoc, side: str) -> str | None:
    """A short reason why a result document's metric is undefined: its unusable-answer rates and notes."""
    rates = {k: _num(v) for k, v in doc.rates.items()}
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
    notes = [n for n in doc.notes if any(w in n.lower() for w in ("undefined", "not enough", "too few"))]
    parts += notes[:3]
    return "; ".join(parts) or None


# ----------------------------------------------------------------------------------------------- pairing
def pair_units(ub_all: Sequence[dict[str, Any]], uv_all: Sequence[dict[str, Any]]
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int, int]:
    """(base units, variant units) paired by ``unit`` in base's order, and the counts of base-only and
    variant-only units."""
    vkeys = {str(u["unit"]): u for u in uv_all}
    bkeys = {str(u["unit"]) for u in ub_all}
    ub = [u for u in ub_all if str(u["unit"]) in vkeys]
    uv = [vkeys[str(u["unit"])] for u in ub]
    return ub, uv, len(ub_all) - len(ub), sum(1 for k in vkeys if k not in bkeys)


def group_units(units: Sequence[dict[str, Any]], field_name: str, group: str) -> list[dict[str, Any]]:
    """The units of one group (``str(unit[field_name]) == group``)."""
    return [u for u in units if str(u.get(field_name)) == group]


def unit_groups(units: Sequence[dict[str, Any]], field_name: str) -> list[str]:
    """The groups of ``field_name`` in first-seen order."""
    return list(dict.fromkeys(str(u.get(field_name)) for u in units if u.get(field_name) is not None))


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


def compare_units(row: Comparison, bench: Benchmark, base_doc: ResultDoc, ub_all: Sequence[dict[str, Any]],
                  var_doc: ResultDoc, uv_all: Sequence[dict[str, Any]], n_boot: int, n_perm: int, seed: int,
                  confidence: float, reuse_doc_values: bool = True) -> None:
    """Fill values, change, CI and test of ``row`` from the unit records of both sides (in place).

    ``reuse_doc_values``: the documents' metrics are ``compute`` of exactly these units (False for a
    subset of them, e.g. one group, or when the units do not reproduce their document)."""
    metric = row.metric
    ub, uv, row.n_base_only, row.n_variant_only = pair_units(ub_all, uv_all)
    row.n_paired = len(ub)
    if row.n_base_only or row.n_variant_only:
        row.notes.append(f"{row.n_base_only} unit(s) only in base and {row.n_variant_only} only in {row.variant} "
                         f"were dropped; values are recomputed on the {row.n_paired} paired units")
    metric_fn = _metric_of(bench, metric)
    # compute is a pure function of the units, so with nothing dropped the documents hold compute(paired units)
    full = reuse_doc_values and not row.n_base_only and not row.n_variant_only
    vb = base_doc.metric(metric) if full and metric in base_doc.metrics else (metric_fn(ub) if ub else None)
    vv = var_doc.metric(metric) if full and metric in var_doc.metrics else (metric_fn(uv) if uv else None)
    row.base, row.value = vb, vv
    row.change = None if vb is None or vv is None else vv - vb
    row.rel_change = relative_change(vb, vv)
    if not ub:
        row.ci_reason = row.test_reason = "no paired units"
        return
    if vb is None or vv is None:  # no number to compare: no CI and no test (and no place in the Holm family)
        side = "base and variant" if vb is None and vv is None else "base" if vb is None else row.variant
        why = [w for w in (why_undefined(base_doc, "base") if vb is None else None,
                           why_undefined(var_doc, row.variant) if vv is None else None) if w]
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
