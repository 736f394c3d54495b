"""Noise estimation: closed-form cases and a seeded simulation of the proxy model."""

from __future__ import annotations

import math
import random

import pytest

from llmnas_dist.evaluation.noise import (
    estimate_noise,
    measured_spearman,
    predicted_spearman,
    rho_from_snr,
    sample_plan,
    scores_by_arch,
    spearman,
)


def test_two_seed_closed_form() -> None:
    d = 0.05
    means = [0.1, 0.2, 0.3, 0.4]
    est = estimate_noise({f"a{i}": [m - d, m + d] for i, m in enumerate(means)})
    # each pair: within variance 2 d^2 with one degree of freedom
    assert est.sigma2_noise == pytest.approx(2 * d * d)
    var_means = sum((m - 0.25) ** 2 for m in means) / 3
    assert est.sigma2_arch == pytest.approx(var_means - d * d)
    assert est.snr == pytest.approx((var_means - d * d) / (2 * d * d))
    assert est.rho_p == pytest.approx(math.sqrt(est.snr / (1 + est.snr)))
    assert (est.n_arch, est.n_scores) == (4, 8)


def test_no_spread_between_architectures_gives_zero_snr() -> None:
    est = estimate_noise({"a": [0.5, 0.6], "b": [0.6, 0.5]})
    assert est.sigma2_arch == 0.0 and est.snr == 0.0 and est.predicted_spearman == 0.0


def test_noise_free_scores_give_perfect_reliability() -> None:
    est = estimate_noise({"a": [0.1, 0.1], "b": [0.9, 0.9, 0.9]})
    assert est.sigma2_noise == 0.0 and math.isinf(est.snr) and est.rho_p == 1.0
    assert est.predicted_spearman == pytest.approx(1.0)


def test_spearman_prediction_formula() -> None:
    assert predicted_spearman(0.0) == 0.0
    assert predicted_spearman(1.0) == pytest.approx(1.0)  # (6/pi) * arcsin(1/2) = 1
    assert predicted_spearman(-0.5) == pytest.approx(-(6 / math.pi) * math.asin(0.25))
    assert rho_from_snr(1.0) == pytest.approx(math.sqrt(0.5))
    with pytest.raises(ValueError):
        predicted_spearman(1.5)
    with pytest.raises(ValueError):
        rho_from_snr(-1.0)


def test_spearman_with_ties() -> None:
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # ranks [1, 2.5, 2.5, 4] against [1, 2, 3, 4]: 4.5 / sqrt(4.5 * 5)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(math.sqrt(0.9))
    with pytest.raises(ValueError):
        spearman([1, 1], [1, 2])
    with pytest.raises(ValueError):
        spearman([1, 2], [1])


def test_simulated_proxy_matches_its_prediction() -> None:
    rng = random.Random(7)
    sa, sn, n, k = 0.08, 0.05, 600, 4
    quality = {f"a{i}": rng.gauss(0.6, sa) for i in range(n)}
    scores = {a: [q + rng.gauss(0, sn) for _ in range(k)] for a, q in quality.items()}
    est = estimate_noise(scores)
    assert est.sigma2_noise == pytest.approx(sn * sn, rel=0.1)
    assert est.sigma2_arch == pytest.approx(sa * sa, rel=0.15)
    proxy = {a: s[0] for a, s in scores.items()}  # one seed: what a cycle measures
    rho, pairs = measured_spearman(proxy, quality)
    assert pairs == n
    assert rho == pytest.approx(est.predicted_spearman, abs=0.05)


def test_too_little_data_is_refused() -> None:
    with pytest.raises(ValueError, match="two architectures"):
        estimate_noise({"a": [0.1, 0.2], "b": [0.3], "c": [float("nan"), 0.4]})


def test_rows_grouping_and_sample_plan() -> None:
    rows = [("b", 0, 0.5), ("a", 1, 0.2), ("a", 0, 0.1), ("a", 0, 0.9), ("b", 1, None)]
    assert scores_by_arch(rows) == {"a": [0.1, 0.2], "b": [0.5]}
    archs = [f"h{i}" for i in range(20)]
    plan = sample_plan(archs, 5, 3, rng_seed=1)
    assert plan == sample_plan(list(reversed(archs)), 5, 3, rng_seed=1)
    assert len(plan) == 15 and len({a for a, _ in plan}) == 5
    assert sorted({s for _, s in plan}) == [0, 1, 2]
    assert len(sample_plan(archs[:3], 5, 2, rng_seed=1)) == 6
    with pytest.raises(ValueError):
        sample_plan(archs, 5, 1, rng_seed=1)
