"""Statistics helpers of the diagnostics: pure functions on plain numbers.

Mann-Kendall trend test with the Theil-Sen slope, Wilson score intervals, the one-sided
two-proportion test, the first-order Markov token-error model (delta vs full), Fisher-z
intervals for Spearman's rho, MinHash pairwise Jaccard, the structure key of a program,
the elite rule top-rho, and `json_safe` (numbers as strict JSON).
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from llmnas_dist.admission.novelty import code_tokens

ALPHA = 0.05
Z95 = 1.959963984540054  # two-sided 95% normal quantile
MIN_TREND_POINTS = 3  # Mann-Kendall has no power below this
MIN_SPEARMAN_PAIRS = 4  # Fisher's z interval needs n > 3
# draws of `spearman_range`: its 2.5% quantile at 6 pairs moved by 0.06 between seeds at
# 4,000 draws (Spearman of 6 pairs takes steps of 1/35)
SPEARMAN_DRAWS = 20_000


def json_safe(value: Any) -> Any:
    """Strict-JSON form: NaN -> None, +-inf -> "inf"/"-inf", tuples -> lists, numpy -> python."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
    return value


@dataclass(frozen=True)
class Trend:
    """Mann-Kendall test (normal approximation, tie-corrected) with the Theil-Sen slope."""

    n: int
    s: int
    tau: float
    z: float
    p_value: float  # two-sided
    slope: float

    @property
    def direction(self) -> str:
        if self.p_value >= ALPHA or self.s == 0:
            return "no trend"
        return "increasing" if self.s > 0 else "decreasing"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "direction": self.direction}


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def mann_kendall(values: Sequence[float], times: Sequence[float] | None = None) -> Trend:
    x = [float(v) for v in values]
    n = len(x)
    if n < MIN_TREND_POINTS:
        raise ValueError(f"a trend test needs at least {MIN_TREND_POINTS} points, got {n}")
    ts = [float(t) for t in times] if times is not None else [float(i) for i in range(n)]
    pairs = [(i, j) for i in range(n - 1) for j in range(i + 1, n)]
    s = sum(_sign(x[j] - x[i]) for i, j in pairs)
    ties = sum(k * (k - 1) * (2 * k + 5) for k in Counter(x).values())
    var = (n * (n - 1) * (2 * n + 5) - ties) / 18.0
    z = 0.0 if s == 0 or var <= 0 else (s - _sign(s)) / math.sqrt(var)
    slopes = [(x[j] - x[i]) / (ts[j] - ts[i]) for i, j in pairs if ts[j] != ts[i]]
    return Trend(
        n=n,
        s=s,
        tau=s / len(pairs),
        z=z,
        p_value=math.erfc(abs(z) / math.sqrt(2.0)),
        slope=float(np.median(slopes)) if slopes else 0.0,
    )


def decreases(values: Sequence[float], tol: float = 1e-9) -> list[tuple[int, float]]:
    """(index, drop) for every step where the sequence goes down by more than tol."""
    return [
        (i, values[i - 1] - values[i])
        for i in range(1, len(values))
        if values[i] < values[i - 1] - tol
    ]


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion k/n."""
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"a proportion needs 0 <= k <= n and n > 0, got k={k}, n={n}")
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def two_proportion_test(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float]:
    """(z, one-sided p) for H1: p1 > p2, pooled standard error."""
    if n1 <= 0 or n2 <= 0:
        raise ValueError("both samples need at least one trial")
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    z = 0.0 if se == 0 else (k1 / n1 - k2 / n2) / se
    return z, 0.5 * math.erfc(z / math.sqrt(2.0))


def markov_token_error(p_valid: float, length: float) -> float:
    """Per-token error eps of the first-order Markov model p_valid = (1 - eps)^length."""
    if not 0.0 <= p_valid <= 1.0 or length <= 0:
        raise ValueError(f"need 0 <= p_valid <= 1 and length > 0, got {p_valid}, {length}")
    return 1.0 - p_valid ** (1.0 / length)


def markov_valid_rate(eps: float, length: float) -> float:
    return (1.0 - eps) ** length


def markov_predicted_ratio(p_full: float, len_full: float, len_delta: float) -> float:
    """Predicted delta/full valid-rate ratio: (1-eps)^(L_delta - L_full), eps from full mode
    (= p_full^(L_delta / L_full - 1)); NaN when full mode never produced a valid program."""
    eps = markov_token_error(p_full, len_full)
    if eps >= 1.0:
        return math.nan
    return markov_valid_rate(eps, len_delta) / p_full


def spearman_interval(r: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Approximate interval for Spearman's rho: Fisher z with Fieller's SE sqrt(1.06/(n-3))."""
    if n < MIN_SPEARMAN_PAIRS:
        raise ValueError(f"an interval needs at least {MIN_SPEARMAN_PAIRS} pairs, got {n}")
    centre = math.atanh(max(-0.999999, min(0.999999, r)))
    half = z * math.sqrt(1.06 / (n - 3))
    return math.tanh(centre - half), math.tanh(centre + half)


def spearman_range(rho_p: float, n: int, draws: int = SPEARMAN_DRAWS) -> tuple[float, float]:
    """The central 95% of Spearman's rho over `n` pairs drawn from a bivariate normal with
    Pearson correlation `rho_p` (the proxy model's own assumption), simulated with a fixed
    seed: where a measured Spearman of `n` architectures falls 95% of the time if the
    prediction holds. Fisher's z around the measurement is no test at the boundary: a
    default run of 2026-12-06 measured 1.000 over 6 architectures, whose interval
    `spearman_interval` gives as [1.000, 1.000], while at rho_p 0.957 a perfect ranking of 6
    happens about a quarter of the time."""
    if n < MIN_SPEARMAN_PAIRS:
        raise ValueError(f"a range needs at least {MIN_SPEARMAN_PAIRS} pairs, got {n}")
    if not -1.0 <= rho_p <= 1.0:
        raise ValueError(f"a correlation lies in [-1, 1], got {rho_p}")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((draws, n))
    y = rho_p * x + math.sqrt(1.0 - rho_p * rho_p) * rng.standard_normal((draws, n))
    d = x.argsort(axis=1).argsort(axis=1) - y.argsort(axis=1).argsort(axis=1)
    rho_s = 1.0 - 6.0 * (d * d).sum(axis=1) / (n * (n * n - 1))
    lo, hi = np.quantile(rho_s, [0.025, 0.975])
    return float(lo), float(hi)


def mean_pairwise_jaccard(signatures: Sequence[np.ndarray]) -> float:
    """Mean MinHash-estimated Jaccard over all pairs (share of equal signature values)."""
    if len(signatures) < 2:
        raise ValueError("pairwise Jaccard needs at least two signatures")
    m = np.stack([np.asarray(s) for s in signatures])
    n = len(m)
    total = sum(float((m[i + 1 :] == m[i]).mean(axis=1).sum()) for i in range(n - 1))
    return total / (n * (n - 1) / 2)


def structure_key(code: str) -> str:
    """Two programs share a structure when they differ only in numeric literals (widths,
    kernel sizes, rates) and comments: the tokens with every number folded to '#'."""
    out: list[str] = []
    for tok in code_tokens(code):
        if tok.isdigit():
            if out and out[-1] == "#":
                continue
            if len(out) >= 2 and out[-1] == "." and out[-2] == "#":  # 0.5 -> # . # -> #
                out.pop()
                continue
            tok = "#"
        out.append(tok)
    return hashlib.sha1(" ".join(out).encode()).hexdigest()


def top_rho(scores: Iterable[float], rho: float, min_elites: int = 1) -> list[float]:
    """The elite scores: the top max(ceil(rho * N), min_elites) of N (the Archive's rule)."""
    ordered = sorted(scores, reverse=True)
    k = min(len(ordered), max(math.ceil(rho * len(ordered)), min_elites))
    return ordered[:k]


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)
