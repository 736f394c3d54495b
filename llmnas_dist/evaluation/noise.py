"""Proxy reliability: how much of a proxy score is the architecture and how much is the seed.

Model (the reference work's): a proxy score is P = Q + e, with Q the architecture's quality
(variance sigma^2_arch across architectures) and e the seed noise (variance sigma^2_noise),
independent; the long-budget reference is taken as noise-free. Then

    SNR    = sigma^2_arch / sigma^2_noise
    rho_P  = corr(P, Q) = sqrt(SNR / (1 + SNR))
    rho_S  = (6 / pi) * arcsin(rho_P / 2)     (Spearman of a bivariate normal)

Estimators (one-way random-effects ANOVA, unbalanced seeds allowed): sigma^2_noise is the
pooled within-architecture variance; sigma^2_arch is the variance of the architecture means
less the part the noise contributes to them (mean of sigma^2_noise / k_i), floored at 0.

The sample plans (which architectures get k seeds, which a reference run) are seeded, so a
resumed run asks for the same evaluations; they are stored as ordinary evaluations with
their seed and budget.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class NoiseEstimate:
    n_arch: int  # architectures with at least two finite scores
    n_scores: int
    sigma2_noise: float
    sigma2_arch: float
    snr: float  # inf when no seed noise was seen
    rho_p: float
    predicted_spearman: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def predicted_spearman(rho_p: float) -> float:
    """Spearman's rho of a bivariate normal with Pearson correlation rho_p."""
    if not -1.0 <= rho_p <= 1.0:
        raise ValueError(f"a correlation lies in [-1, 1], got {rho_p}")
    return (6.0 / math.pi) * math.asin(rho_p / 2.0)


def rho_from_snr(snr: float) -> float:
    if snr < 0 or math.isnan(snr):
        raise ValueError(f"SNR must be >= 0, got {snr}")
    return 1.0 if math.isinf(snr) else math.sqrt(snr / (1.0 + snr))


def estimate_noise(scores: Mapping[str, Sequence[float]]) -> NoiseEstimate:
    """sigma^2_noise, sigma^2_arch, SNR, rho_P and the predicted Spearman from repeated seeds
    (architecture -> its scores over seeds). Needs two architectures with two scores each;
    non-finite scores (failed runs) are left out."""
    groups = {
        arch: [float(v) for v in values if v is not None and math.isfinite(v)]
        for arch, values in scores.items()
    }
    groups = {arch: values for arch, values in groups.items() if len(values) >= 2}
    if len(groups) < 2:
        raise ValueError(
            "noise estimation needs at least two architectures with two or more scores each"
        )
    means = {arch: sum(v) / len(v) for arch, v in groups.items()}
    within = sum(sum((x - means[a]) ** 2 for x in v) for a, v in groups.items())
    dof = sum(len(v) - 1 for v in groups.values())
    sigma2_noise = within / dof
    grand = sum(means.values()) / len(means)
    var_means = sum((m - grand) ** 2 for m in means.values()) / (len(means) - 1)
    noise_in_means = sum(sigma2_noise / len(v) for v in groups.values()) / len(groups)
    sigma2_arch = max(0.0, var_means - noise_in_means)
    # No seed noise at all: perfectly reliable if architectures differ, uninformative if not.
    no_noise_snr = math.inf if sigma2_arch > 0 else 0.0
    snr = sigma2_arch / sigma2_noise if sigma2_noise > 0 else no_noise_snr
    rho_p = rho_from_snr(snr)
    return NoiseEstimate(
        n_arch=len(groups),
        n_scores=sum(len(v) for v in groups.values()),
        sigma2_noise=sigma2_noise,
        sigma2_arch=sigma2_arch,
        snr=snr,
        rho_p=rho_p,
        predicted_spearman=predicted_spearman(rho_p),
    )


def _ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties given their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (Pearson on average ranks); ValueError when undefined."""
    if len(x) != len(y):
        raise ValueError(f"spearman needs paired samples, got {len(x)} and {len(y)}")
    if len(x) < 2 or not all(math.isfinite(v) for v in (*x, *y)):
        raise ValueError("spearman needs at least two finite pairs")
    rx, ry = _ranks(x), _ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    vx = sum((a - mx) ** 2 for a in rx)
    vy = sum((b - my) ** 2 for b in ry)
    if vx == 0 or vy == 0:
        raise ValueError("spearman is undefined when one side is constant")
    return cov / math.sqrt(vx * vy)


def measured_spearman(
    proxy: Mapping[str, float], reference: Mapping[str, float]
) -> tuple[float, int]:
    """(Spearman, pairs) of proxy against reference scores over their common architectures."""
    common = sorted(
        a
        for a in proxy.keys() & reference.keys()
        if math.isfinite(proxy[a]) and math.isfinite(reference[a])
    )
    return spearman([proxy[a] for a in common], [reference[a] for a in common]), len(common)


def scores_by_arch(rows: Iterable[tuple[str, int, float | None]]) -> dict[str, list[float]]:
    """Group (architecture, seed, score) rows of one dataset and budget; failed rows
    (score None) are left out, a repeated (architecture, seed) counts once."""
    seen: dict[tuple[str, int], float] = {}
    for arch, seed, score in rows:
        if score is not None:
            seen.setdefault((arch, seed), float(score))
    grouped: dict[str, list[float]] = {}
    for (arch, _), score in sorted(seen.items()):
        grouped.setdefault(arch, []).append(score)
    return grouped


def sample_plan(
    architectures: Sequence[str], sample_size: int, seeds: int, rng_seed: int
) -> list[tuple[str, int]]:
    """(architecture, seed) pairs for the noise study: a seeded sample of `sample_size`
    distinct architectures (all when fewer), each with seeds 0..seeds-1."""
    if sample_size < 2 or seeds < 2:
        raise ValueError("a noise study needs at least 2 architectures and 2 seeds")
    pool = sorted(set(architectures))
    chosen = random.Random(rng_seed).sample(pool, min(sample_size, len(pool)))
    return [(arch, seed) for arch in sorted(chosen) for seed in range(seeds)]
