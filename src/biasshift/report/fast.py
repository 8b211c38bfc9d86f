"""Metric evaluators for the paired bootstrap and permutation test.

An evaluator answers two questions on the paired unit lists ``ub`` (base) and ``uv`` (variant):
``delta(idx)`` = metric(variant units idx) - metric(base units idx) (bootstrap, same idx both sides) and
``stat(swap)`` = the same difference after exchanging base and variant for the units where ``swap`` is
True (permutation test). :class:`Recompute` calls the benchmark's ``compute`` for every resample, which
is exact for any metric but costs two ``compute`` calls per replicate.

:class:`Weighted` is the vectorised path of a benchmark that provides one
(:meth:`Benchmark.weighted_metric <biasshift.benchmarks.base.Benchmark.weighted_metric>`: the metric of
a multiset of units given integer weights). It is built once on the ``2n`` units ``ub + uv``; a
bootstrap resample weights base's units by their multiplicities (variant's 0) and vice versa, a
relabelling gives weight 1 to the units each side holds after the swap. It is used only after it
reproduces ``compute`` on the full paired sample (and, for up to :data:`CHECK_UNITS` units, on one
resample and one relabelling); otherwise the report falls back to :class:`Recompute` and says so.
Nothing here knows any benchmark by name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from ..benchmarks.base import Benchmark

Metric = Callable[[Sequence[dict[str, Any]]], "float | None"]

#: up to this many paired units the vectorised path is also checked on one resample and one relabelling
CHECK_UNITS = 2000


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


class Weighted:
    """A benchmark's weighted metric ``f`` over the ``2n`` units ``ub + uv`` (base first)."""

    note = None

    def __init__(self, f: Callable[[np.ndarray], float | None], n: int, name: str) -> None:
        self.f, self.n = f, n
        self.method = f"vectorised {name} metric (weighted units), checked against compute()"
        self.zeros = np.zeros(n)

    def _side(self, wb: np.ndarray, wv: np.ndarray) -> float | None:
        return self.f(np.concatenate([wb, wv]))

    def values(self) -> tuple[float | None, float | None]:
        ones = np.ones(self.n)
        return self._side(ones, self.zeros), self._side(self.zeros, ones)

    def delta(self, idx: np.ndarray) -> float | None:
        mult = np.bincount(np.asarray(idx, dtype=np.int64), minlength=self.n).astype(float)
        return _diff(self._side(mult, self.zeros), self._side(self.zeros, mult))

    def stat(self, swap: np.ndarray) -> float | None:
        s = np.asarray(swap, dtype=float)
        # base side: base units not swapped and variant units swapped; the variant side the rest
        return _diff(self._side(1.0 - s, s), self._side(s, 1.0 - s))


def _close(a: float | None, b: float | None, tol: float = 1e-9) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= tol * max(1.0, abs(a), abs(b))


def evaluator(bench: Benchmark, metric: str, ub: list[dict[str, Any]], uv: list[dict[str, Any]], metric_fn: Metric,
              vb: float | None, vv: float | None) -> Evaluator:
    """The fastest evaluator that reproduces ``compute`` on these units (``vb``, ``vv``: the full-sample values)."""
    try:
        f = bench.weighted_metric(metric, list(ub) + list(uv))
        if f is None:
            return Recompute(metric_fn, ub, uv)
        ev = Weighted(f, len(ub), bench.name)
        fb, fv = ev.values()
        ok = _close(fb, vb) and _close(fv, vv)
        if ok and len(ub) <= CHECK_UNITS:  # cheap enough: also one resample and one relabelling against compute()
            rng = np.random.default_rng(12345)
            idx = rng.integers(0, len(ub), size=len(ub))
            swap = rng.random(len(ub)) < 0.5
            ok = _close(ev.delta(idx), _diff(metric_fn([ub[i] for i in idx]), metric_fn([uv[i] for i in idx]))) \
                and _close(ev.stat(swap), Recompute(metric_fn, ub, uv).stat(swap))
        if ok:
            return ev
        why = f"the vectorised {bench.name} path did not reproduce compute(); recomputing the metric per resample"
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        why = f"the vectorised {bench.name} path failed ({exc}); recomputing the metric per resample"
    return Recompute(metric_fn, ub, uv, note=why)
