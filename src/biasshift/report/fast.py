"""Metric evaluators for the paired bootstrap and permutation test.

An evaluator answers two questions on the paired unit lists ``ub`` (base) and ``uv`` (variant):
``delta(idx)`` = metric(variant units idx) - metric(base units idx) (bootstrap, same idx both sides) and
``stat(swap)`` = the same difference after exchanging base and variant for the units where ``swap`` is
True (permutation test). :class:`Recompute` calls the benchmark's ``compute`` for every resample, which
is exact for any metric but costs two ``compute`` calls per replicate.

:class:`GlobalOpinionFast` is a vectorised path for GlobalOpinionQA's metrics (Gini / mean of
per-country medians of Wasserstein distances, and of per-country mean 1 - JSD similarity). It computes
each (question, country) distance once and evaluates a resample as weighted per-country medians with
integer weights (unit multiplicities, or 0/1 for a relabelling). It is used only after it reproduces
``compute`` on the full paired sample (and, for small inputs, on one resample); otherwise the report
falls back to :class:`Recompute` and says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from ..benchmarks.base import Benchmark, mean

Metric = Callable[[Sequence[dict[str, Any]]], "float | None"]


class Evaluator(Protocol):
    method: str
    note: str | None

    def delta(self, idx: np.ndarray) -> float | None: ...

    def stat(self, swap: np.ndarray) -> float | None: ...


def _diff(b: float | None, v: float | None) -> float | None:
    return None if b is None or v is None else v - b


class Recompute:
    """Recompute the metric with the benchmark's ``compute`` on every resample / relabelling."""

    method = "metric recomputed with compute()"

    def __init__(self, metric: Metric, ub: list[dict[str, Any]], uv: list[dict[str, Any]], note: str | None = None) -> None:
        self.f, self.ub, self.uv, self.note = metric, ub, uv, note

    def delta(self, idx: np.ndarray) -> float | None:
        return _diff(self.f([self.ub[i] for i in idx]), self.f([self.uv[i] for i in idx]))

    def stat(self, swap: np.ndarray) -> float | None:
        base = [v if s else b for b, v, s in zip(self.ub, self.uv, swap)]
        var = [b if s else v for b, v, s in zip(self.ub, self.uv, swap)]
        return _diff(self.f(base), self.f(var))


# ---------------------------------------------------------------------------------------- GlobalOpinionQA
GOQA_METRICS = ("gini_wasserstein", "mean_median_wasserstein", "mean_similarity_1mjsd", "gini_similarity_1mjsd")


def _entries(units: list[dict[str, Any]], countries: dict[str, int]) -> tuple[list[int], list[int], list[float], list[float]]:
    """(unit index, country index, Wasserstein distance, 1 - JS distance) for every scored (unit, country)."""
    ui: list[int] = []
    ci: list[int] = []
    wd: list[float] = []
    sim: list[float] = []
    for i, u in enumerate(units):
        k = int(u["k"])
        model = u["model"]
        if any(p is None for p in model):
            continue
        names, rows = [], []
        for c, d in u["countries"].items():
            if "(" in c:
                continue
            arr = np.asarray(d, dtype=float)
            if arr.sum() <= 0 or arr.size != k:
                continue
            names.append(c)
            rows.append(arr)
        if not rows:
            continue
        m = np.asarray(model, dtype=float)
        p = m / m.sum()
        q = np.vstack(rows)
        q = q / q.sum(axis=1, keepdims=True)
        # W1 between distributions on positions 0..k-1 (unit spacing) = sum of |CDF differences|
        w = np.abs(np.cumsum(p)[None, :] - np.cumsum(q, axis=1))[:, :-1].sum(axis=1)
        mid = 0.5 * (p[None, :] + q)
        with np.errstate(divide="ignore", invalid="ignore"):
            kl_p = np.where(p[None, :] > 0, p[None, :] * np.log2(np.where(p[None, :] > 0, p[None, :], 1) / np.where(mid > 0, mid, 1)), 0.0).sum(axis=1)
            kl_q = np.where(q > 0, q * np.log2(np.where(q > 0, q, 1) / np.where(mid > 0, mid, 1)), 0.0).sum(axis=1)
        js = np.sqrt(np.maximum(0.0, 0.5 * (kl_p + kl_q)))
        for c, wv, jv in zip(names, w, js):
            ui.append(i)
            ci.append(countries.setdefault(c, len(countries)))
            wd.append(float(wv))
            sim.append(1.0 - float(jv))
    return ui, ci, wd, sim


class GlobalOpinionFast:
    method = "vectorised per-country medians, checked against compute()"
    note = None

    def __init__(self, metric: str, ub: list[dict[str, Any]], uv: list[dict[str, Any]], min_questions: int) -> None:
        from ..benchmarks.global_opinion_qa import gini

        self.gini = gini
        self.metric = metric
        self.minq = int(min_questions)
        self.n = len(ub)
        names: dict[str, int] = {}
        eb = _entries(ub, names)
        ev = _entries(uv, names)
        # country indices in sorted-name order, as compute() orders the kept countries
        order_names = sorted(names)
        remap = np.array([order_names.index(c) for c in names], dtype=np.int64) if names else np.zeros(0, np.int64)
        self.C = len(order_names)
        unit = np.asarray(eb[0] + ev[0], dtype=np.int64)
        side = np.asarray([0] * len(eb[0]) + [1] * len(ev[0]), dtype=np.int64)
        country = remap[np.asarray(eb[1] + ev[1], dtype=np.int64)] if names else np.zeros(0, np.int64)
        wd = np.asarray(eb[2] + ev[2], dtype=float)
        sim = np.asarray(eb[3] + ev[3], dtype=float)
        o = np.lexsort((wd, country))
        self.unit, self.is_base, self.country = unit[o], side[o] == 0, country[o]
        self.wd, self.sim = wd[o], sim[o]
        self.start = np.searchsorted(self.country, np.arange(self.C), side="left")
        self.end = np.searchsorted(self.country, np.arange(self.C), side="right")  # every country has >= 1 entry
        self.isb = self.is_base.astype(float)
        self.ones = np.ones(self.unit.size)
        self.arange = np.arange(1, self.unit.size + 1, dtype=float)

    # -- one side, from the cumulative sum of its per-entry integer weights -----------------------
    def _value(self, g: np.ndarray, w: np.ndarray) -> float | None:
        """Metric of one side; ``g`` = cumsum of the per-entry weights ``w`` (sorted entry order)."""
        before = np.where(self.start > 0, g[np.maximum(self.start - 1, 0)], 0.0)
        counts = g[self.end - 1] - before
        kept = np.nonzero(counts >= self.minq)[0]
        if kept.size == 0:
            return None
        if self.metric in ("mean_similarity_1mjsd", "gini_similarity_1mjsd"):
            sums = np.bincount(self.country, weights=w * self.sim, minlength=self.C)
            vals = [float(x) for x in sums[kept] / counts[kept]]
            return mean(vals) if self.metric == "mean_similarity_1mjsd" else self.gini(vals)
        before, t = before[kept], counts[kept]
        lo = np.searchsorted(g, before + np.floor((t - 1) / 2), side="right")
        hi = np.searchsorted(g, before + np.floor(t / 2), side="right")
        meds = [float(x) for x in (self.wd[lo] + self.wd[hi]) / 2]
        return mean(meds) if self.metric == "mean_median_wasserstein" else self.gini(meds)

    def _pair(self, wb: np.ndarray, wall: np.ndarray, gall: np.ndarray) -> float | None:
        gb = np.cumsum(wb)
        wv = wall - wb if self.metric in ("mean_similarity_1mjsd", "gini_similarity_1mjsd") else wb  # wv only used there
        return _diff(self._value(gb, wb), self._value(gall - gb, wv))

    def values(self) -> tuple[float | None, float | None]:
        wb = self.isb
        gb, gv = np.cumsum(wb), np.cumsum(1.0 - wb)
        return self._value(gb, wb), self._value(gv, 1.0 - wb)

    def delta(self, idx: np.ndarray) -> float | None:
        mult = np.bincount(idx, minlength=self.n).astype(float)[self.unit]
        return self._pair(mult * self.isb, mult, np.cumsum(mult))

    def stat(self, swap: np.ndarray) -> float | None:
        s = np.asarray(swap, dtype=float)[self.unit]
        # base side: base entries of unswapped units and variant entries of swapped ones (0/1 weights)
        return self._pair(self.isb + s * (1.0 - 2.0 * self.isb), self.ones, self.arange)


def _close(a: float | None, b: float | None, tol: float = 1e-9) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= tol * max(1.0, abs(a), abs(b))


def evaluator(bench: Benchmark, metric: str, ub: list[dict[str, Any]], uv: list[dict[str, Any]], metric_fn: Metric,
              vb: float | None, vv: float | None) -> Evaluator:
    """The fastest evaluator that reproduces ``compute`` on these units."""
    if bench.name == "global_opinion_qa" and metric in GOQA_METRICS:
        try:
            ev = GlobalOpinionFast(metric, ub, uv, bench.options.get("min_questions", 50))
            fb, fv = ev.values()
            ok = _close(fb, vb) and _close(fv, vv)
            if ok and ev.wd.size <= 20000:  # cheap enough: also check one resample against compute()
                idx = np.random.default_rng(12345).integers(0, len(ub), size=len(ub))
                ok = _close(ev.delta(idx), _diff(metric_fn([ub[i] for i in idx]), metric_fn([uv[i] for i in idx])))
            if ok:
                return ev
            why = "the vectorised GlobalOpinionQA path did not reproduce compute(); recomputing the metric per resample"
        except (KeyError, TypeError, ValueError) as exc:
            why = f"the vectorised GlobalOpinionQA path failed ({exc}); recomputing the metric per resample"
        return Recompute(metric_fn, ub, uv, note=why)
    return Recompute(metric_fn, ub, uv)
