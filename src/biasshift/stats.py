"""Paired statistics for base-vs-accelerated bias comparisons.

Every comparison in biasshift is *paired*: the base model and its accelerated
variant are scored on the same benchmark items (same prompts, same seeds), so
the natural resampling / relabelling unit is the item ("unit"), and both sides
are always resampled or relabelled together.

Metrics are not always means (a share of binary outcomes, a Gini coefficient
across countries of per-country medians, a max-min over groups...), so the
general entry points take a *function of unit indices* (bootstrap) or of a
*swap mask* (permutation) and recompute the metric from scratch.  Vectorised
fast paths exist for the common mean-of-per-item-values case.

Conventions
-----------
* Differences are always ``variant - base``.
* All randomness comes from ``np.random.default_rng(seed)``; results are
  deterministic for a given seed.  The general and fast paths draw their random
  numbers from the same stream in the same order, so for a mean metric they
  see the very same resamples / relabellings for the same seed.
* A metric that is undefined on a resample (returns ``None`` or a non-finite
  value) makes that replicate *invalid*: it is skipped and counted.  If more
  than half of the replicates are invalid no interval / p-value is reported and
  ``reason`` says why.  Exceptions raised by the callback are not caught.

See ``docs/statistics.md`` for which test is used where.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import binom

__all__ = [
    "BootstrapCI",
    "McNemarResult",
    "PermutationResult",
    "paired_bootstrap",
    "paired_bootstrap_mean",
    "mcnemar_exact",
    "paired_permutation_test",
    "paired_permutation_mean",
    "holm",
    "relative_change",
    "EXACT_PERMUTATION_MAX_UNITS",
    "EXACT_SIGNFLIP_MAX_UNITS",
]

#: General permutation path enumerates all 2**n swaps up to this many units.
EXACT_PERMUTATION_MAX_UNITS = 12
#: Sign-flip fast path enumerates all 2**n sign patterns up to this many units.
EXACT_SIGNFLIP_MAX_UNITS = 16

# Absolute tolerance when comparing |permuted statistic| with |observed|, so
# that relabellings tying the observed value are not lost to rounding.  It is
# scaled by max(1, |observed|) for statistics of large magnitude.
_TIE_TOL = 1e-12

# Upper bound on the number of array elements materialised per random batch.
_BATCH_ELEMENTS = 1 << 20


# --------------------------------------------------------------------------- #
# Result types
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class BootstrapCI:
    """Point estimate and percentile bootstrap interval for a paired change.

    ``low``/``high`` are ``None`` when the interval could not be formed
    (``reason`` explains).  ``n_invalid`` counts replicates skipped because the
    metric was undefined on that resample.
    """

    estimate: float | None
    low: float | None
    high: float | None
    confidence: float
    n_boot: int
    n_invalid: int
    method: str
    reason: str | None = None


@dataclass(frozen=True)
class McNemarResult:
    """Exact McNemar test on paired binary outcomes.

    ``b``: base True and variant False; ``c``: base False and variant True.
    """

    b: int
    c: int
    n: int
    p_value: float
    mid_p_value: float
    method: str = "mcnemar-exact"


@dataclass(frozen=True)
class PermutationResult:
    """Two-sided paired permutation test of ``variant - base``.

    ``n_perm`` is the number of relabellings evaluated (``2**n`` when
    ``exact``).  ``p_value`` is ``None`` when it could not be computed
    (``reason`` explains).
    """

    observed: float | None
    p_value: float | None
    n_perm: int
    exact: bool
    n_invalid: int
    method: str
    reason: str | None = None


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #


def _as_value(x: Any) -> float | None:
    """Convert a callback's return value to float, or None if undefined."""
    if x is None:
        return None
    v = float(x)
    if not math.isfinite(v):
        return None
    return v


def _check_n_units(n_units: int) -> int:
    n = int(n_units)
    if n != n_units or n < 1:
        raise ValueError(f"n_units must be a positive integer, got {n_units!r}")
    return n


def _check_count(name: str, value: int) -> int:
    v = int(value)
    if v != value or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return v


def _check_confidence(confidence: float) -> float:
    c = float(confidence)
    if not 0.0 < c < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    return c


def _paired_differences(base: Any, variant: Any) -> np.ndarray:
    b = np.asarray(base, dtype=float)
    v = np.asarray(variant, dtype=float)
    if b.ndim != 1 or v.ndim != 1:
        raise ValueError("base and variant must be 1-D arrays of per-item values")
    if b.shape != v.shape:
        raise ValueError(
            f"base and variant must have the same length (paired), got {b.size} and {v.size}"
        )
    if b.size == 0:
        raise ValueError("need at least one item")
    if not (np.all(np.isfinite(b)) and np.all(np.isfinite(v))):
        raise ValueError(
            "base/variant contain non-finite values; drop or aggregate such items first"
        )
    return v - b


def _rows_per_batch(n_units: int) -> int:
    return max(1, _BATCH_ELEMENTS // n_units)


def _bootstrap_index_batches(
    rng: np.random.Generator, n_boot: int, n_units: int
) -> Iterator[np.ndarray]:
    """Yield (k, n_units) int arrays of resampled unit indices, n_boot rows in all.

    Shared by the general and the fast path so both see identical resamples.
    """
    step = _rows_per_batch(n_units)
    done = 0
    while done < n_boot:
        k = min(step, n_boot - done)
        yield rng.integers(0, n_units, size=(k, n_units))
        done += k


def _random_swap_batches(
    rng: np.random.Generator, n_perm: int, n_units: int
) -> Iterator[np.ndarray]:
    """Yield (k, n_units) boolean swap masks (fair coin per unit), n_perm rows in all.

    Shared by the general and the fast path so both see identical relabellings.
    """
    step = _rows_per_batch(n_units)
    done = 0
    while done < n_perm:
        k = min(step, n_perm - done)
        yield rng.random(size=(k, n_units)) < 0.5
        done += k


def _all_swaps(n_units: int) -> np.ndarray:
    """All 2**n_units boolean swap masks, one per row (row 0 = no swap)."""
    codes = np.arange(1 << n_units, dtype=np.int64)
    bits = np.arange(n_units, dtype=np.int64)
    return ((codes[:, None] >> bits[None, :]) & 1).astype(bool)


def _percentile_ci(
    estimate: float | None,
    reps: np.ndarray,
    n_boot: int,
    confidence: float,
    method: str,
) -> BootstrapCI:
    n_invalid = n_boot - reps.size
    if estimate is None:
        return BootstrapCI(
            None, None, None, confidence, n_boot, n_invalid, method,
            reason="metric undefined on the full sample",
        )
    if 2 * n_invalid > n_boot:
        return BootstrapCI(
            estimate, None, None, confidence, n_boot, n_invalid, method,
            reason=f"{n_invalid} of {n_boot} bootstrap replicates invalid (more than half)",
        )
    alpha = 1.0 - confidence
    low, high = np.percentile(reps, [100.0 * alpha / 2.0, 100.0 * (1.0 - alpha / 2.0)])
    return BootstrapCI(
        estimate, float(low), float(high), confidence, n_boot, n_invalid, method
    )


def _permutation_p(
    observed: float,
    stats: np.ndarray,
    n_total: int,
    exact: bool,
    method: str,
) -> PermutationResult:
    n_invalid = n_total - stats.size
    if 2 * n_invalid > n_total:
        return PermutationResult(
            observed, None, n_total, exact, n_invalid, method,
            reason=f"{n_invalid} of {n_total} relabellings invalid (more than half)",
        )
    tol = _TIE_TOL * max(1.0, abs(observed))
    count = int(np.count_nonzero(np.abs(stats) >= abs(observed) - tol))
    if exact:
        p = count / stats.size
    else:
        p = (1 + count) / (stats.size + 1)
    return PermutationResult(observed, min(1.0, p), n_total, exact, n_invalid, method)


# --------------------------------------------------------------------------- #
# Bootstrap
# --------------------------------------------------------------------------- #


def paired_bootstrap(
    n_units: int,
    delta_fn: Callable[[np.ndarray], float | None],
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> BootstrapCI:
    """Percentile bootstrap CI for a paired change in an arbitrary metric.

    ``delta_fn(idx)`` must return ``metric(variant on units idx) -
    metric(base on units idx)`` for an int array ``idx`` of unit indices
    (possibly repeated); using the same ``idx`` for both sides is what makes
    the bootstrap paired.  The estimate is ``delta_fn(np.arange(n_units))``.

    Replicates for which ``delta_fn`` returns ``None`` or a non-finite value are
    skipped and counted in ``n_invalid``; if more than half are invalid the
    interval is ``None`` and ``reason`` is set.
    """
    n = _check_n_units(n_units)
    n_boot = _check_count("n_boot", n_boot)
    confidence = _check_confidence(confidence)
    rng = np.random.default_rng(seed)

    estimate = _as_value(delta_fn(np.arange(n)))
    reps: list[float] = []
    for batch in _bootstrap_index_batches(rng, n_boot, n):
        for idx in batch:
            v = _as_value(delta_fn(idx))
            if v is not None:
                reps.append(v)
    return _percentile_ci(
        estimate, np.asarray(reps, dtype=float), n_boot, confidence, "percentile"
    )


def paired_bootstrap_mean(
    base: Any,
    variant: Any,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> BootstrapCI:
    """Vectorised paired bootstrap for a mean of per-item values.

    Equivalent to :func:`paired_bootstrap` with
    ``delta_fn = lambda idx: variant[idx].mean() - base[idx].mean()``; for the
    same seed it uses the same resamples (results agree up to rounding).
    """
    d = _paired_differences(base, variant)
    n_boot = _check_count("n_boot", n_boot)
    confidence = _check_confidence(confidence)
    rng = np.random.default_rng(seed)

    estimate = float(d.mean())
    parts = [d[idx].mean(axis=1) for idx in _bootstrap_index_batches(rng, n_boot, d.size)]
    reps = np.concatenate(parts)
    return _percentile_ci(estimate, reps, n_boot, confidence, "percentile-mean")


# --------------------------------------------------------------------------- #
# McNemar
# --------------------------------------------------------------------------- #


def _as_binary(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of binary outcomes")
    if a.dtype != bool:
        if a.size and not np.all((a == 0) | (a == 1)):
            raise ValueError(f"{name} must contain only booleans or 0/1")
        a = a.astype(bool)
    return a


def mcnemar_exact(base: Any, variant: Any) -> McNemarResult:
    """Exact (binomial) McNemar test for paired binary per-item outcomes.

    ``b`` = #(base True, variant False), ``c`` = #(base False, variant True).
    Two-sided p = min(1, 2 * Binom(b + c, 1/2).cdf(min(b, c))), and 1 when
    b + c == 0.  The mid-p variant subtracts half the point probability of the
    observed split from the tail: min(1, 2 * (cdf(k) - pmf(k) / 2)).
    """
    b_arr = _as_binary(base, "base")
    v_arr = _as_binary(variant, "variant")
    if b_arr.shape != v_arr.shape:
        raise ValueError(
            f"base and variant must have the same length (paired), got {b_arr.size} and {v_arr.size}"
        )
    b = int(np.count_nonzero(b_arr & ~v_arr))
    c = int(np.count_nonzero(~b_arr & v_arr))
    m = b + c
    if m == 0:
        return McNemarResult(b, c, int(b_arr.size), 1.0, 1.0)
    k = min(b, c)
    tail = float(binom.cdf(k, m, 0.5))
    point = float(binom.pmf(k, m, 0.5))
    p = min(1.0, 2.0 * tail)
    mid_p = min(1.0, 2.0 * (tail - 0.5 * point))
    return McNemarResult(b, c, int(b_arr.size), p, mid_p)


# --------------------------------------------------------------------------- #
# Permutation tests
# --------------------------------------------------------------------------- #


def paired_permutation_test(
    n_units: int,
    stat_fn: Callable[[np.ndarray], float | None],
    n_perm: int = 5000,
    seed: int = 0,
) -> PermutationResult:
    """Two-sided paired permutation (within-unit label swap) test.

    ``stat_fn(swap)`` receives a boolean array of length ``n_units`` (True =
    exchange base and variant outputs for that unit) and returns the statistic
    ``metric(variant) - metric(base)`` under that relabelling.  The observed
    statistic is ``stat_fn`` of all-False.

    With ``n_units <= 12`` all ``2**n_units`` relabellings are enumerated and
    p = #{|stat| >= |observed|} / 2**n.  Otherwise ``n_perm`` random
    relabellings are drawn and p = (1 + #{...}) / (n_perm + 1).  Ties are
    counted with a tolerance of 1e-12 (scaled by |observed| when it exceeds 1).
    Relabellings where ``stat_fn`` returns ``None``/non-finite are skipped and
    counted in ``n_invalid``.
    """
    n = _check_n_units(n_units)
    n_perm = _check_count("n_perm", n_perm)

    observed = _as_value(stat_fn(np.zeros(n, dtype=bool)))
    exact = n <= EXACT_PERMUTATION_MAX_UNITS
    method = "permutation-exact" if exact else "permutation-monte-carlo"
    if exact:
        batches: Iterator[np.ndarray] = iter([_all_swaps(n)])
        n_total = 1 << n
    else:
        batches = _random_swap_batches(np.random.default_rng(seed), n_perm, n)
        n_total = n_perm
    if observed is None:
        return PermutationResult(
            None, None, n_total, exact, 0, method,
            reason="statistic undefined for the observed labelling",
        )

    stats: list[float] = []
    for batch in batches:
        for swap in batch:
            v = _as_value(stat_fn(swap))
            if v is not None:
                stats.append(v)
    return _permutation_p(observed, np.asarray(stats, dtype=float), n_total, exact, method)


def paired_permutation_mean(
    base: Any,
    variant: Any,
    n_perm: int = 5000,
    seed: int = 0,
) -> PermutationResult:
    """Vectorised sign-flip permutation test for a mean of per-item values.

    Swapping base and variant for an item flips the sign of its difference, so
    the statistic under a relabelling is mean(where(swap, -d, d)).  Exact
    enumeration of all 2**n sign patterns when n <= 16; otherwise ``n_perm``
    random relabellings drawn exactly as :func:`paired_permutation_test` draws
    them for the same seed.
    """
    d = _paired_differences(base, variant)
    n_perm = _check_count("n_perm", n_perm)
    n = d.size
    total = float(d.sum())
    observed = total / n

    def stats_of(swaps: np.ndarray) -> np.ndarray:
        return (total - 2.0 * (swaps.astype(float) @ d)) / n

    if n <= EXACT_SIGNFLIP_MAX_UNITS:
        stats = stats_of(_all_swaps(n))
        return _permutation_p(observed, stats, 1 << n, True, "signflip-exact")
    rng = np.random.default_rng(seed)
    stats = np.concatenate([stats_of(s) for s in _random_swap_batches(rng, n_perm, n)])
    return _permutation_p(observed, stats, n_perm, False, "signflip-monte-carlo")


# --------------------------------------------------------------------------- #
# Multiple comparisons and effect size helpers
# --------------------------------------------------------------------------- #


def _is_missing(p: Any) -> bool:
    return p is None or (isinstance(p, (float, np.floating)) and math.isnan(p))


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni step-down adjusted p-values.

    Sorted ascending, p_(i) (i = 1..m) is adjusted to
    max_{j <= i} min(1, (m - j + 1) * p_(j)).  ``None``/NaN entries are returned
    unchanged in place and do not count towards ``m``.
    """
    out: list[float | None] = list(pvalues)
    valid = [(i, float(p)) for i, p in enumerate(pvalues) if not _is_missing(p)]
    for i, p in valid:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p-value at position {i} is outside [0, 1]: {p!r}")
    m = len(valid)
    running = 0.0
    for rank, (i, p) in enumerate(sorted(valid, key=lambda t: t[1])):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def relative_change(base: float | None, variant: float | None) -> float | None:
    """(variant - base) / |base|; None when base == 0 or either value is missing."""
    if _is_missing(base) or _is_missing(variant):
        return None
    b = float(base)  # type: ignore[arg-type]
    v = float(variant)  # type: ignore[arg-type]
    if b == 0.0:
        return None
    return (v - b) / abs(b)
