"""The proxy-reliability gate: whether the proxy's seed noise drowns the differences between
architectures (SNR below the configured threshold).

The driver calls `noise_gate` at runtime on the (architecture, seed, score) rows of its
noise study and stores `GateDecision.to_dict()` with the cycle; the report's sixth result
applies `reliability_gate` to the same estimate. Pure functions on data: no archive, no ray.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from llmnas_dist.analysis.stats import json_safe
from llmnas_dist.evaluation.noise import estimate_noise, scores_by_arch


@dataclass(frozen=True)
class GateDecision:
    """Whether the proxy is too noisy: SNR below the threshold (NaN and inf never are)."""

    snr: float
    threshold: float
    low: bool
    n_arch: int = 0
    predicted_spearman: float | None = None

    def to_dict(self) -> dict[str, Any]:
        # same keys the driver stores in a cycle's settings["gate"]
        return json_safe(
            {
                "snr": self.snr,
                "threshold": self.threshold,
                "low": self.low,
                "n_archs": self.n_arch,
                "predicted_spearman": self.predicted_spearman,
            }
        )

    @property
    def message(self) -> str:
        rel = "below" if self.low else "at or above"
        rho = (
            ""
            if self.predicted_spearman is None
            else f", predicted Spearman {self.predicted_spearman:.3f}"
        )
        return (
            f"proxy reliability: SNR {self.snr:.3f} is {rel} the threshold {self.threshold:g} "
            f"over {self.n_arch} architectures{rho}"
        )


def reliability_gate(
    snr: float, threshold: float, *, n_arch: int = 0, predicted_spearman: float | None = None
) -> GateDecision:
    if math.isnan(threshold) or threshold < 0:
        raise ValueError(f"the SNR threshold must be >= 0, got {threshold}")
    return GateDecision(snr, threshold, bool(snr < threshold), n_arch, predicted_spearman)


def noise_gate(
    rows: Iterable[tuple[str, int, float | None]], threshold: float
) -> GateDecision | None:
    """The gate over (architecture, seed, score) rows of one dataset and budget; None while
    fewer than two architectures have two or more successful seeds."""
    groups = {a: s for a, s in scores_by_arch(rows).items() if len(s) >= 2}
    if len(groups) < 2:
        return None
    est = estimate_noise(groups)
    return reliability_gate(
        est.snr, threshold, n_arch=est.n_arch, predicted_spearman=est.predicted_spearman
    )
