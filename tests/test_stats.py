"""Tests for biasshift.stats, against closed-form or hand-computed answers."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from biasshift.stats import (
    BootstrapCI,
    holm,
    mcnemar_exact,
    paired_bootstrap,
    paired_bootstrap_mean,
    paired_permutation_mean,
    paired_permutation_test,
    relative_change,
)


def _binary_pairs(b: int, c: int, n_agree_true: int = 3, n_agree_false: int = 2):
    """Base/variant boolean arrays with exactly b (T,F) and c (F,T) discordant pairs."""
    base = [True] * b + [False] * c + [True] * n_agree_true + [False] * n_agree_false
    variant = [False] * b + [True] * c + [True] * n_agree_true + [False] * n_agree_false
    return np.array(base), np.array(variant)


def _mean_delta(base: np.ndarray, variant: np.ndarray):
    return lambda idx: float(variant[idx].mean() - base[idx].mean())


def _mean_swap_stat(base: np.ndarray, variant: np.ndarray):
    def stat(swap: np.ndarray) -> float:
        b = np.where(swap, variant, base)
        v = np.where(swap, base, variant)
        return float(v.mean() - b.mean())

    return stat


# --------------------------------------------------------------------------- #
# McNemar
# --------------------------------------------------------------------------- #


def test_mcnemar_all_discordant_one_way():
    base, variant = _binary_pairs(0, 5)
    r = mcnemar_exact(base, variant)
    assert (r.b, r.c, r.n) == (0, 5, 10)
    assert r.p_value == pytest.approx(2 * 0.5**5)  # 0.0625
    # mid-p: 2 * (P(X<=0) - P(X=0)/2) = P(X=0) = 1/32
    assert r.mid_p_value == pytest.approx(1 / 32)


def test_mcnemar_balanced_is_one():
    base, variant = _binary_pairs(4, 4)
    r = mcnemar_exact(base, variant)
    assert (r.b, r.c) == (4, 4)
    assert r.p_value == 1.0
    # mid-p at the centre: 2 * (cdf(4) - pmf(4)/2) = 2 * ((163 - 35) / 256) = 1
    assert r.mid_p_value == pytest.approx(1.0)


def test_mcnemar_b1_c9_by_hand():
    # n = 10: P(X <= 1) = (C(10,0) + C(10,1)) / 2^10 = 11/1024
    base, variant = _binary_pairs(1, 9)
    r = mcnemar_exact(base, variant)
    assert (r.b, r.c) == (1, 9)
    assert r.p_value == pytest.approx(22 / 1024)  # 0.021484375
    # mid-p: 2 * (11/1024 - (10/1024)/2) = 12/1024
    assert r.mid_p_value == pytest.approx(12 / 1024)
    # symmetric in direction
    r2 = mcnemar_exact(variant, base)
    assert (r2.b, r2.c) == (9, 1)
    assert r2.p_value == pytest.approx(r.p_value)


def test_mcnemar_no_discordant_pairs():
    x = np.array([True, False, True])
    r = mcnemar_exact(x, x)
    assert (r.b, r.c, r.p_value, r.mid_p_value) == (0, 0, 1.0, 1.0)


def test_mcnemar_accepts_01_and_rejects_other_values():
    r = mcnemar_exact([1, 0, 1, 1], [0, 0, 0, 1])
    assert (r.b, r.c) == (2, 0)
    assert r.p_value == pytest.approx(0.5)  # 2 * 0.5**2
    with pytest.raises(ValueError):
        mcnemar_exact([0, 2], [0, 1])
    with pytest.raises(ValueError):
        mcnemar_exact([True, False], [True])


# --------------------------------------------------------------------------- #
# Holm
# --------------------------------------------------------------------------- #


def test_holm_hand_computed():
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> max(0.06, 0.04)=0.06
    adj = holm([0.01, 0.04, 0.03, 0.005])
    assert adj == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_missing_entries_pass_through_and_do_not_count():
    adj = holm([0.01, None, 0.04, float("nan"), 0.03, 0.005])
    assert adj[1] is None
    assert math.isnan(adj[3])
    assert [adj[i] for i in (0, 2, 4, 5)] == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one_and_is_monotone():
    p = [0.6, 0.2, 0.9, 0.01]
    adj = holm(p)
    # sorted 0.01*4=0.04, 0.2*3=0.6, 0.6*2=1.2->1, 0.9*1=0.9 -> 1
    assert adj == pytest.approx([1.0, 0.6, 1.0, 0.04])
    order = np.argsort(p)
    sorted_adj = [adj[i] for i in order]
    assert sorted_adj == sorted(sorted_adj)
    assert holm([]) == []
    assert holm([None]) == [None]
    with pytest.raises(ValueError):
        holm([0.5, 1.5])


# --------------------------------------------------------------------------- #
# relative_change
# --------------------------------------------------------------------------- #


def test_relative_change():
    assert relative_change(0.5, 0.6) == pytest.approx(0.2)
    assert relative_change(-0.5, -0.25) == pytest.approx(0.5)  # |base| in denominator
    assert relative_change(2.0, 1.0) == pytest.approx(-0.5)
    assert relative_change(0.0, 1.0) is None
    assert relative_change(None, 1.0) is None
    assert relative_change(1.0, None) is None


# --------------------------------------------------------------------------- #
# Permutation tests
# --------------------------------------------------------------------------- #


def test_signflip_exact_tiny_case_by_hand():
    # differences [1, 2, 3]: observed mean 2 (sum 6). Of the 8 sign patterns only
    # (+,+,+) and (-,-,-) reach |sum| >= 6, so p = 2/8.
    base = np.zeros(3)
    variant = np.array([1.0, 2.0, 3.0])
    r = paired_permutation_mean(base, variant)
    assert r.exact and r.n_perm == 8
    assert r.observed == pytest.approx(2.0)
    assert r.p_value == pytest.approx(0.25)


def test_general_permutation_exact_tiny_case_by_hand():
    base = np.array([0.0, 1.0, 5.0])
    variant = base + np.array([1.0, 2.0, 3.0])
    r = paired_permutation_test(3, _mean_swap_stat(base, variant))
    assert r.exact and r.n_perm == 8 and r.n_invalid == 0
    assert r.observed == pytest.approx(2.0)
    assert r.p_value == pytest.approx(0.25)


def test_exact_counts_ties_at_observed():
    # differences [1, 1]: every sign pattern except the mixed ones reaches |mean| = 1
    # -> 2 of 4. Mixed patterns give 0.
    r = paired_permutation_mean([0.0, 0.0], [1.0, 1.0])
    assert r.p_value == pytest.approx(0.5)
    # differences [1, -1]: observed 0, all 4 patterns have |mean| >= 0 -> p = 1
    r = paired_permutation_mean([0.0, 0.0], [1.0, -1.0])
    assert r.p_value == pytest.approx(1.0)


@pytest.mark.parametrize("n", [1, 5, 9, 12])
def test_signflip_equals_general_path_in_exact_regime(n):
    rng = np.random.default_rng(100 + n)
    base = rng.normal(size=n)
    variant = base + rng.normal(0.4, 1.0, size=n)
    fast = paired_permutation_mean(base, variant)
    general = paired_permutation_test(n, _mean_swap_stat(base, variant))
    assert fast.exact and general.exact
    assert fast.n_perm == general.n_perm == 2**n
    assert fast.p_value == general.p_value
    assert fast.observed == pytest.approx(general.observed)


def test_signflip_exact_up_to_16_units():
    # 14 items all +1: only the two constant sign patterns reach |mean| = 1.
    r = paired_permutation_mean(np.zeros(14), np.ones(14))
    assert r.exact and r.n_perm == 2**14
    assert r.p_value == pytest.approx(2 / 2**14)
    r = paired_permutation_mean(np.zeros(17), np.ones(17), n_perm=999)
    assert not r.exact and r.n_perm == 999


def test_monte_carlo_fast_and_general_agree_for_same_seed():
    rng = np.random.default_rng(7)
    n = 40
    base = rng.normal(size=n)
    variant = base + rng.normal(0.2, 1.0, size=n)
    fast = paired_permutation_mean(base, variant, n_perm=2000, seed=3)
    general = paired_permutation_test(n, _mean_swap_stat(base, variant), n_perm=2000, seed=3)
    assert not fast.exact and not general.exact
    assert fast.p_value == general.p_value
    # and the MC p-value is close to a large-sample sign-flip estimate
    ref = paired_permutation_mean(base, variant, n_perm=20000, seed=11)
    assert abs(fast.p_value - ref.p_value) < 0.05


def test_monte_carlo_p_formula_and_determinism():
    # a huge effect: no random relabelling reaches the observed mean (only the
    # all-False one could, probability 2**-30), so p = 1 / (n_perm + 1).
    n = 30
    r = paired_permutation_mean(np.zeros(n), np.full(n, 5.0) + np.arange(n) * 0.01, n_perm=499)
    assert r.p_value == pytest.approx(1 / 500)
    a = paired_permutation_mean(np.zeros(n), np.random.default_rng(1).normal(size=n), seed=5)
    b = paired_permutation_mean(np.zeros(n), np.random.default_rng(1).normal(size=n), seed=5)
    assert a == b


def test_permutation_identical_models_give_p_one():
    x = np.random.default_rng(2).normal(size=60)
    # all differences zero -> every relabelling ties the observed 0 -> p = 1
    r = paired_permutation_mean(x, x.copy(), n_perm=999)
    assert r.p_value == pytest.approx(1.0)
    r = paired_permutation_test(60, _mean_swap_stat(x, x.copy()), n_perm=999)
    assert r.p_value == pytest.approx(1.0)


def test_general_permutation_non_mean_statistic_and_invalid():
    # max-min over groups of the per-group mean difference; group 2 has one unit
    base = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4])
    variant = base + np.array([0.5] * 7 + [0.0] * 7)
    groups = np.array([0] * 7 + [1] * 7)

    def spread_change(swap):
        b = np.where(swap, variant, base)
        v = np.where(swap, base, variant)

        def spread(x):
            means = [x[groups == g].mean() for g in (0, 1)]
            return max(means) - min(means)

        return spread(v) - spread(b)

    r = paired_permutation_test(14, spread_change, n_perm=400, seed=0)
    assert not r.exact
    assert r.observed is not None and 0.0 < r.p_value <= 1.0

    def sometimes_undefined(swap):
        if swap[0]:
            return None
        return spread_change(swap)

    r = paired_permutation_test(14, sometimes_undefined, n_perm=400, seed=0)
    assert 0 < r.n_invalid < 400 and r.p_value is not None

    r = paired_permutation_test(4, lambda swap: float("nan") if swap.any() else 1.0)
    assert r.exact and r.n_invalid == 15 and r.p_value is None and r.reason


# --------------------------------------------------------------------------- #
# Bootstrap
# --------------------------------------------------------------------------- #


def test_bootstrap_constant_delta_zero_width():
    ci = paired_bootstrap(50, lambda idx: 0.3, n_boot=200)
    assert ci.estimate == pytest.approx(0.3)
    assert ci.low == pytest.approx(0.3) and ci.high == pytest.approx(0.3)
    ci = paired_bootstrap_mean(np.zeros(50), np.full(50, 0.3), n_boot=200)
    assert ci.low == pytest.approx(0.3) and ci.high == pytest.approx(0.3)


def test_bootstrap_known_normal_case():
    rng = np.random.default_rng(12345)
    n = 400
    base = rng.normal(size=n)
    variant = base + rng.normal(1.0, 1.0, size=n)
    expected_width = 2 * 1.96 / math.sqrt(n)  # 0.196
    for ci in (
        paired_bootstrap_mean(base, variant, n_boot=2000, seed=1),
        paired_bootstrap(n, _mean_delta(base, variant), n_boot=1000, seed=1),
    ):
        assert ci.low < 1.0 < ci.high
        assert ci.low < ci.estimate < ci.high
        assert ci.high - ci.low == pytest.approx(expected_width, rel=0.15)
        assert ci.confidence == 0.95 and ci.n_invalid == 0 and ci.reason is None


def test_bootstrap_fast_path_agrees_with_general_path():
    rng = np.random.default_rng(9)
    n = 200
    base = rng.normal(size=n)
    variant = base + rng.normal(0.3, 1.0, size=n)
    fast = paired_bootstrap_mean(base, variant, n_boot=1000, seed=4)
    general = paired_bootstrap(n, _mean_delta(base, variant), n_boot=1000, seed=4)
    # same seed -> same resamples -> same interval up to rounding
    assert fast.estimate == pytest.approx(general.estimate)
    assert fast.low == pytest.approx(general.low, abs=1e-9)
    assert fast.high == pytest.approx(general.high, abs=1e-9)
    # different seeds -> agreement within Monte-Carlo tolerance
    other = paired_bootstrap(n, _mean_delta(base, variant), n_boot=1000, seed=99)
    se = np.std(variant - base, ddof=1) / math.sqrt(n)
    assert abs(other.low - fast.low) < 0.3 * se
    assert abs(other.high - fast.high) < 0.3 * se


def test_bootstrap_non_mean_metrics():
    rng = np.random.default_rng(3)
    n = 120
    base = rng.normal(size=n)
    variant = base + rng.normal(0.5, 1.0, size=n)
    ci = paired_bootstrap(
        n, lambda idx: float(np.median(variant[idx]) - np.median(base[idx])), n_boot=300
    )
    assert ci.low <= ci.estimate <= ci.high and ci.low < ci.high

    groups = np.arange(n) % 4

    def maxmin(x, g):
        means = [x[g == k].mean() for k in range(4) if np.any(g == k)]
        return max(means) - min(means)

    def delta(idx):
        return maxmin(variant[idx], groups[idx]) - maxmin(base[idx], groups[idx])

    ci = paired_bootstrap(n, delta, n_boot=300, seed=2)
    assert ci.low <= ci.estimate <= ci.high and ci.low < ci.high
    assert ci.method == "percentile"


def test_bootstrap_invalid_replicates_counted():
    # metric needs unit 0 in the resample; P(unit 0 absent) = (1 - 1/n)^n ~ 0.35 for n=10
    n = 10
    values = np.arange(n, dtype=float)

    def delta(idx):
        if 0 not in idx:
            return None
        return float(values[idx].mean())

    ci = paired_bootstrap(n, delta, n_boot=1000, seed=0)
    assert 250 < ci.n_invalid < 450
    assert ci.low is not None and ci.reason is None

    # NaN also counts as invalid; more than half invalid -> no interval
    counter = iter(range(10**6))

    def mostly_nan(idx):
        k = next(counter)
        if k == 0:
            return 1.0  # the full-sample estimate
        return 1.0 if k % 3 == 0 else float("nan")

    ci = paired_bootstrap(n, mostly_nan, n_boot=300)
    assert ci.estimate == 1.0
    assert ci.n_invalid == 200
    assert ci.low is None and ci.high is None and ci.reason


def test_bootstrap_undefined_estimate():
    ci = paired_bootstrap(5, lambda idx: None, n_boot=10)
    assert ci.estimate is None and ci.low is None and ci.reason


def test_bootstrap_determinism_and_seed_dependence():
    rng = np.random.default_rng(0)
    base = rng.normal(size=80)
    variant = base + rng.normal(0.2, 1.0, size=80)
    f = lambda idx: float(np.median(variant[idx] - base[idx]))
    a = paired_bootstrap(80, f, n_boot=300, seed=5)
    b = paired_bootstrap(80, f, n_boot=300, seed=5)
    c = paired_bootstrap(80, f, n_boot=300, seed=6)
    assert a == b
    assert (a.low, a.high) != (c.low, c.high)
    assert paired_bootstrap_mean(base, variant, seed=5) == paired_bootstrap_mean(
        base, variant, seed=5
    )


def test_bootstrap_result_is_frozen_and_validates_inputs():
    ci = paired_bootstrap_mean([0.0, 1.0], [1.0, 2.0], n_boot=10)
    assert isinstance(ci, BootstrapCI)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ci.low = 0.0  # type: ignore[misc]
    with pytest.raises(ValueError):
        paired_bootstrap_mean([0.0, 1.0], [1.0], n_boot=10)
    with pytest.raises(ValueError):
        paired_bootstrap_mean([0.0, float("nan")], [1.0, 1.0], n_boot=10)
    with pytest.raises(ValueError):
        paired_bootstrap(0, lambda idx: 0.0)
    with pytest.raises(ValueError):
        paired_bootstrap(5, lambda idx: 0.0, confidence=1.0)


def test_bootstrap_confidence_level_narrows_interval():
    rng = np.random.default_rng(4)
    d = rng.normal(size=300)
    wide = paired_bootstrap_mean(np.zeros(300), d, seed=0, confidence=0.95)
    narrow = paired_bootstrap_mean(np.zeros(300), d, seed=0, confidence=0.80)
    assert narrow.low > wide.low and narrow.high < wide.high
    # 80% normal interval: +-1.2816 * se
    se = d.std(ddof=1) / math.sqrt(300)
    assert narrow.high - narrow.low == pytest.approx(2 * 1.2816 * se, rel=0.15)


def test_bootstrap_resamples_units_with_replacement():
    n = 7
    seen: list[np.ndarray] = []

    def record(idx):
        seen.append(np.array(idx))
        return 0.0

    paired_bootstrap(n, record, n_boot=200, seed=0)
    assert np.array_equal(seen[0], np.arange(n))  # full-sample estimate first
    reps = np.stack(seen[1:])
    assert reps.shape == (200, n)
    assert reps.min() == 0 and reps.max() == n - 1  # every unit can be drawn
    assert set(np.unique(reps)) == set(range(n))
    # with replacement: some resample repeats a unit
    assert any(len(np.unique(r)) < n for r in reps)
