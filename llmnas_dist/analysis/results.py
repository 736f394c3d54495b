"""The six results (convergence diagnostics) of the CE view of LLM-NAS, measured from a run.

Each result is computed by a pure function over plain rows (so synthetic inputs with known
answers test it) and says whether the run's data supports it: "supported", "not
supported" or "insufficient data", with its numbers and sample sizes.

1. CE equivalence    every CE cycle's update is a max-likelihood fit on its elite set E_t
                     (examples and training loss of the adapter recorded per cycle)
2. monotonicity      the mean score of E_t never decreases over t (checked cycle by cycle;
                     Mann-Kendall trend test on the elite means and the cycle sample means)
3. elite mass        C_t = share of cycle-t samples at or above a fixed gamma* stays at or
                     above the bound 1 - (1 - rho_0)^t, rho_0 = C_1 (Wilson intervals)
4. delta vs full     valid-generation rate per mode (Wilson intervals, one-sided
                     two-proportion test) and the first-order Markov token-error model's
                     predicted delta/full ratio from the measured output lengths
5. no collapse       per cycle: novelty rejection rate, mean pairwise MinHash Jaccard of the
                     admitted programs, distinct structures; collapse = a significant trend
6. proxy reliability sigma^2_noise, sigma^2_arch, SNR, predicted Spearman rho_S, and the
                     measured Spearman against the reference budget where it was run

The rows come from `rundata`, the statistics from `stats`, the SNR gate from `gate`;
`diagnose` computes all six for one run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from llmnas_dist.analysis.gate import reliability_gate
from llmnas_dist.analysis.rundata import (
    SEED_CYCLE,
    AdapterRow,
    CandidateRow,
    CycleRow,
    EvalRow,
    RunData,
    arch_scores,
    elite_scores_by_cycle,
    llm_candidates,
    samples_by_cycle,
)
from llmnas_dist.analysis.stats import (
    ALPHA,
    MIN_SPEARMAN_PAIRS,
    MIN_TREND_POINTS,
    Trend,
    decreases,
    finite,
    json_safe,
    mann_kendall,
    markov_predicted_ratio,
    markov_token_error,
    markov_valid_rate,
    mean,
    mean_pairwise_jaccard,
    spearman_interval,
    spearman_range,
    structure_key,
    two_proportion_test,
    wilson_interval,
)
from llmnas_dist.evaluation.noise import estimate_noise, scores_by_arch, spearman
from llmnas_dist.vocab import decoding_of, left_out_a_hunk

SUPPORTED = "supported"
NOT_SUPPORTED = "not supported"
INSUFFICIENT = "insufficient data"
MIN_MODE_SAMPLES = 10  # attempts per mode before comparing valid rates
MAX_JACCARD_PROGRAMS = 200  # pairwise Jaccard on an evenly spaced subsample beyond this


@dataclass
class Result:
    """One diagnostic: its verdict on the data, numbers, sample sizes and plot series."""

    key: str
    title: str
    claim: str
    status: str
    summary: str
    numbers: dict[str, Any] = field(default_factory=dict)
    samples: dict[str, int] = field(default_factory=dict)
    series: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


# ---- 1. CE equivalence -----------------------------------------------------------------


def ce_equivalence(cycles: Sequence[CycleRow], adapters: Sequence[AdapterRow]) -> Result:
    ce_cycles = [c.t for c in cycles if c.t > SEED_CYCLE and c.status == "completed"]
    # cycle t's update trains as cycle t+1 starts: the last cycle's is never due
    due = ce_cycles[:-1]
    updates = {a.cycle: a for a in adapters if a.cycle > SEED_CYCLE}
    n_elites = {c.t: c.n_elites for c in cycles}
    ts = sorted(updates)
    series: dict[str, Any] = {
        "t": ts,
        "train_loss": [updates[t].train_loss for t in ts],
        "n_examples": [updates[t].n_examples for t in ts],
        "n_elites": [n_elites.get(t) for t in ts],
    }
    res = Result(
        "ce_equivalence",
        "1. CE equivalence",
        "Each cycle's fine-tune is a maximum-likelihood fit of the LLM on the elite set E_t "
        "(the CE update restricted to the LoRA family).",
        INSUFFICIENT,
        "",
        samples={"ce_cycles": len(ce_cycles), "updates": len(ts)},
        series=series,
    )
    warm = [a for a in adapters if a.cycle == SEED_CYCLE]
    res.numbers = {
        "cycles_without_update": [t for t in due if t not in updates],
        "warm_start_examples": warm[0].n_examples if warm else None,
        "first_loss": series["train_loss"][0] if ts else None,
        "last_loss": series["train_loss"][-1] if ts else None,
    }
    if not ts:
        res.summary = f"no CE update recorded over {len(ce_cycles)} completed CE cycles"
        return res
    bad = [t for t in ts if updates[t].n_examples < 1 or not finite(updates[t].train_loss)]
    res.numbers["bad_updates"] = bad
    res.status = NOT_SUPPORTED if bad else SUPPORTED
    losses = ", ".join("-" if x is None else f"{x:.3f}" for x in series["train_loss"])
    res.summary = (
        f"{len(ts)} of {len(due)} CE updates due fine-tuned on their elites (the last "
        "cycle's would serve no cycle) "
        f"({sum(series['n_examples'])} examples in all; loss per cycle {losses})"
        + (f"; cycles {bad} have no examples or a non-finite loss" if bad else "")
    )
    return res


# ---- 2. monotonicity -------------------------------------------------------------------


def _trend_or_none(values: Sequence[float], times: Sequence[float]) -> Trend | None:
    return mann_kendall(values, times) if len(values) >= MIN_TREND_POINTS else None


def monotonicity(
    elites: Mapping[int, Sequence[float]],
    gammas: Mapping[int, float | None],
    samples: Mapping[int, Sequence[float]],
) -> Result:
    ts = sorted(t for t, v in elites.items() if v)
    means = [mean(elites[t]) for t in ts]
    sample_ts = sorted(t for t in samples if t > SEED_CYCLE and samples[t])
    sample_means = [mean(samples[t]) for t in sample_ts]
    series: dict[str, Any] = {
        "t": ts,
        "elite_mean": means,
        "gamma_t": [gammas.get(t) for t in ts],
        "sample_t": sample_ts,
        "sample_mean": sample_means,
    }
    res = Result(
        "monotonicity",
        "2. Monotone elite quality",
        "The mean score of the elite set E_t is non-decreasing over cycles t.",
        INSUFFICIENT,
        "",
        samples={"cycles": len(ts), "elites": sum(len(elites[t]) for t in ts)},
        series=series,
    )
    elite_trend = _trend_or_none(means, ts)
    sample_trend = _trend_or_none(sample_means, sample_ts)
    drops = [(ts[i], d) for i, d in decreases(means)]
    g = [x for x in series["gamma_t"] if x is not None]
    res.numbers = {
        "elite_mean_first": means[0] if means else None,
        "elite_mean_last": means[-1] if means else None,
        "decreases": [{"t": t, "drop": d} for t, d in drops],
        "gamma_decreases": len(decreases(g)),
        "elite_trend": elite_trend.to_dict() if elite_trend else None,
        "sample_mean_trend": sample_trend.to_dict() if sample_trend else None,
    }
    if len(ts) < 2:
        res.summary = f"{len(ts)} completed cycle(s) with an elite set: nothing to compare"
        return res
    res.status = NOT_SUPPORTED if drops else SUPPORTED
    trend = (
        f"; Mann-Kendall on elite means: {elite_trend.direction} "
        f"(tau {elite_trend.tau:.2f}, p {elite_trend.p_value:.3g})"
        if elite_trend
        else ""
    )
    what = (
        "non-decreasing at every step"
        if not drops
        else "decreases at cycle(s) " + ", ".join(f"{t} (-{d:.4f})" for t, d in drops)
    )
    res.summary = (
        f"elite mean {means[0]:.4f} -> {means[-1]:.4f} over {len(ts)} cycles, {what}{trend}"
    )
    return res


# ---- 3. elite mass ---------------------------------------------------------------------


def elite_mass_bound(rho0: float, t: int) -> float:
    """1 - (1 - rho_0)^t: the elite mass the CE recursion guarantees after t cycles."""
    if not 0.0 <= rho0 <= 1.0:
        raise ValueError(f"rho_0 is a share in [0, 1], got {rho0}")
    return 1.0 - (1.0 - rho0) ** t


def elite_mass(samples: Mapping[int, Sequence[float]], gamma_star: float | None) -> Result:
    ts = sorted(t for t in samples if t > SEED_CYCLE and samples[t])
    res = Result(
        "elite_mass",
        "3. Elite mass",
        "C_t, the share of cycle-t samples at or above a fixed reference gamma*, stays at or "
        "above the bound 1 - (1 - rho_0)^t with rho_0 = C_1.",
        INSUFFICIENT,
        "",
        samples={"cycles": len(ts), "samples": sum(len(samples[t]) for t in ts)},
    )
    if gamma_star is None or 1 not in ts:
        res.summary = "no reference gamma* or no evaluated sample in cycle 1"
        res.numbers = {"gamma_star": gamma_star}
        return res
    n = [len(samples[t]) for t in ts]
    k = [sum(1 for s in samples[t] if s >= gamma_star) for t in ts]
    c = [ki / ni for ki, ni in zip(k, n, strict=True)]
    rho0 = c[ts.index(1)]
    bound = [elite_mass_bound(rho0, t) for t in ts]
    ci = [wilson_interval(ki, ni) for ki, ni in zip(k, n, strict=True)]
    below = [t for t, b, (_, hi) in zip(ts, bound, ci, strict=True) if t > 1 and hi < b]
    res.series = {
        "t": ts,
        "c_t": c,
        "lo": [lo for lo, _ in ci],
        "hi": [hi for _, hi in ci],
        "bound": bound,
        "n": n,
        "above": k,
    }
    res.numbers = {"gamma_star": gamma_star, "rho_0": rho0, "below_bound": below}
    if len(ts) < 2:
        res.summary = f"C_1 = {rho0:.3f} (rho_0); a second cycle is needed to test the bound"
        return res
    res.status = NOT_SUPPORTED if below else SUPPORTED
    res.summary = (
        f"gamma* = {gamma_star:.4f}, rho_0 = {rho0:.3f}; C_t = {c[-1]:.3f} at t = {ts[-1]} "
        f"(bound {bound[-1]:.3f}); "
        + (
            "every C_t's 95% interval reaches the bound"
            if not below
            else f"C_t is significantly below the bound at t = {below}"
        )
    )
    return res


# ---- 4. delta vs full ------------------------------------------------------------------


def _mode_stats(cands: Sequence[CandidateRow]) -> dict[str, Any]:
    n = len(cands)
    k = sum(1 for c in cands if c.valid)
    lengths = [c.output_tokens for c in cands if c.output_tokens]
    lo, hi = wilson_interval(k, n) if n else (math.nan, math.nan)
    slots: dict[tuple[int, int], bool] = {}
    for c in sorted(cands, key=lambda c: c.attempt):
        slots[(c.cycle, c.slot)] = c.valid
    return {
        "n": n,
        "valid": k,
        "rate": k / n if n else math.nan,
        "lo": lo,
        "hi": hi,
        "mean_tokens": mean([float(x) for x in lengths]),
        "n_lengths": len(lengths),
        "retries": sum(1 for c in cands if c.attempt > 0),
        # admitted without one of their hunks (AdmissionConfig.drop_faulty_hunks)
        "hunk_left_out": sum(1 for c in cands if c.valid and left_out_a_hunk(c.message)),
        # after retries with the error fed back: slots whose last attempt was valid
        "slots": len(slots),
        "slots_valid": sum(1 for ok in slots.values() if ok),
    }


def delta_vs_full(candidates: Sequence[CandidateRow]) -> Result:
    judged = llm_candidates(candidates)
    modes = {m: _mode_stats([c for c in judged if c.mode == m]) for m in ("delta", "full")}
    d, f = modes["delta"], modes["full"]
    res = Result(
        "delta_vs_full",
        "4. Delta vs full code",
        "Delta generations are valid more often than full-code ones; the first-order Markov "
        "token-error model p = (1 - eps)^L predicts the ratio from output lengths.",
        INSUFFICIENT,
        "",
        samples={"delta": d["n"], "full": f["n"]},
        series={"modes": modes},
    )
    numbers: dict[str, Any] = {"delta": d, "full": f, "by_decoding": by_decoding(judged)}
    res.numbers = numbers
    decoding = _decoding_summary(numbers["by_decoding"])
    if min(d["n"], f["n"]) < MIN_MODE_SAMPLES:
        res.summary = (
            f"{d['n']} delta and {f['n']} full attempts; at least {MIN_MODE_SAMPLES} of each "
            "are needed" + decoding
        )
        return res
    z, p = two_proportion_test(d["valid"], d["n"], f["valid"], f["n"])
    numbers |= {
        "z": z,
        "p_value": p,
        "observed_ratio": d["rate"] / f["rate"] if f["rate"] else math.inf,
    }
    if finite(f["mean_tokens"]) and finite(d["mean_tokens"]) and f["mean_tokens"] > 0:
        eps = markov_token_error(f["rate"], f["mean_tokens"])
        numbers |= {
            "eps": eps,
            "predicted_delta_rate": markov_valid_rate(eps, d["mean_tokens"]),
            "predicted_ratio": markov_predicted_ratio(
                f["rate"], f["mean_tokens"], d["mean_tokens"]
            ),
        }
    res.status = SUPPORTED if p < ALPHA else NOT_SUPPORTED
    pred = numbers.get("predicted_ratio")
    pred_txt = f", Markov model predicts {pred:.2f}" if pred is not None and finite(pred) else ""
    left_out = f", {d['hunk_left_out']} without a hunk" if d["hunk_left_out"] else ""
    res.summary = (
        f"valid delta {d['rate']:.1%} ({d['valid']}/{d['n']}{left_out}) vs full {f['rate']:.1%} "
        f"({f['valid']}/{f['n']}), one-sided p {p:.3g}; observed ratio "
        f"{numbers['observed_ratio']:.2f}{pred_txt}" + decoding
    )
    return res


def by_decoding(judged: Sequence[CandidateRow]) -> dict[str, dict[str, Any]]:
    """Valid-rate statistics per (mode, decoding): constrained answers are valid by
    construction far more often, so pooling them with free ones would hide both rates."""
    groups: dict[str, list[CandidateRow]] = {}
    for c in judged:
        groups.setdefault(f"{c.mode} {decoding_of(c.constrained)}", []).append(c)
    return {key: _mode_stats(cands) for key, cands in sorted(groups.items())}


def _decoding_summary(groups: dict[str, dict[str, Any]]) -> str:
    if len(groups) < 2:
        return ""
    parts = [f"{key} {g['rate']:.1%} ({g['valid']}/{g['n']})" for key, g in groups.items()]
    return "; by decoding: " + ", ".join(parts)


# ---- 5. no collapse --------------------------------------------------------------------


def _subsample(items: Sequence[Any], limit: int) -> list[Any]:
    if len(items) <= limit:
        return list(items)
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


def cycle_diversity(
    cands: Sequence[CandidateRow], signatures: Mapping[str, np.ndarray], codes: Mapping[str, str]
) -> dict[str, Any]:
    """One cycle's novelty rejection rate, mean pairwise Jaccard and distinct structures."""
    valid = [c for c in cands if c.valid]
    hashes = sorted({c.arch_hash for c in cands if c.archived and c.arch_hash})
    sigs = [
        signatures[h]
        for h in _subsample([h for h in hashes if h in signatures], MAX_JACCARD_PROGRAMS)
    ]
    structures = {structure_key(codes[h]) for h in hashes if h in codes}
    nearest = [c.nearest_jaccard for c in cands if c.archived and c.nearest_jaccard is not None]
    return {
        "valid": len(valid),
        "novelty_rejected": sum(1 for c in valid if c.novelty_rejected),
        "rejection_rate": (
            sum(1 for c in valid if c.novelty_rejected) / len(valid) if valid else math.nan
        ),
        "admitted": len(hashes),
        "mean_jaccard": mean_pairwise_jaccard(sigs) if len(sigs) >= 2 else math.nan,
        "distinct_structures": len(structures),
        "structure_share": len(structures) / len(hashes) if hashes and structures else math.nan,
        "mean_nearest_jaccard": mean(nearest),
    }


def no_collapse(
    candidates: Sequence[CandidateRow],
    signatures: Mapping[str, np.ndarray],
    codes: Mapping[str, str],
) -> Result:
    judged = llm_candidates(candidates)
    ts = sorted({c.cycle for c in judged})
    rows = {t: cycle_diversity([c for c in judged if c.cycle == t], signatures, codes) for t in ts}
    series: dict[str, Any] = {"t": ts}
    for key in ("rejection_rate", "mean_jaccard", "structure_share", "distinct_structures",
                "admitted", "valid", "novelty_rejected", "mean_nearest_jaccard"):  # fmt: skip
        series[key] = [rows[t][key] for t in ts]
    res = Result(
        "no_collapse",
        "5. No mode collapse",
        "The search keeps proposing different programs: no rising novelty rejection rate, no "
        "rising pairwise similarity, no shrinking share of distinct structures.",
        INSUFFICIENT,
        "",
        samples={"cycles": len(ts), "valid": sum(r["valid"] for r in rows.values())},
        series=series,
    )
    trends: dict[str, dict[str, Any] | None] = {}
    for key in ("rejection_rate", "mean_jaccard", "structure_share"):
        pts = [(t, v) for t, v in zip(ts, series[key], strict=True) if finite(v)]
        trend = _trend_or_none([v for _, v in pts], [t for t, _ in pts])
        trends[key] = trend.to_dict() if trend else None
    res.numbers = {"trends": trends}
    if all(v is None for v in trends.values()):
        res.summary = f"{len(ts)} CE cycle(s) with judged proposals; {MIN_TREND_POINTS} needed"
        return res
    signs = {
        "rejection_rate": "increasing",
        "mean_jaccard": "increasing",
        "structure_share": "decreasing",
    }
    bad = [k for k, d in signs.items() if (trends[k] or {}).get("direction") == d]
    res.status = NOT_SUPPORTED if bad else SUPPORTED
    last = rows[ts[-1]]
    diversity = (  # pairwise Jaccard needs two programs: a last cycle may admit fewer
        f"mean pairwise Jaccard {last['mean_jaccard']:.3f}, {last['distinct_structures']} "
        f"distinct structures of {last['admitted']} programs"
        if last["admitted"] >= 2
        else f"{last['admitted']} program(s) admitted"
    )
    res.summary = (
        f"last cycle: novelty rejection {last['rejection_rate']:.1%} of {last['valid']} valid, "
        f"{diversity}; "
        + ("significant collapse trend in " + ", ".join(bad) if bad else "no collapse trend")
    )
    return res


# ---- 6. proxy reliability --------------------------------------------------------------


def proxy_reliability(
    evaluations: Sequence[EvalRow],
    dataset: str,
    budget: str,
    reference_budget: str,
    threshold: float,
) -> Result:
    rows = [
        (e.arch_hash, e.seed, e.score)
        for e in evaluations
        if e.dataset == dataset and e.budget == budget
    ]
    groups = scores_by_arch(rows)
    repeated = {a: v for a, v in groups.items() if len(v) >= 2}
    res = Result(
        "proxy_reliability",
        "6. Proxy reliability",
        "With proxy = quality + seed noise, the Spearman correlation of the proxy with the "
        "reference ranking is rho_S = (6/pi) arcsin(rho_P / 2), rho_P = sqrt(SNR / (1 + SNR)).",
        INSUFFICIENT,
        "",
        samples={"noise_archs": len(repeated), "noise_scores": sum(map(len, repeated.values()))},
        series={"noise": {a[:12]: v for a, v in sorted(repeated.items())}},
    )
    if len(repeated) < 2:
        res.summary = (
            f"{len(repeated)} architecture(s) with repeated seeds at {budget}; the noise study "
            "needs two (evaluation.noise_sample)"
        )
        return res
    est = estimate_noise(repeated)
    gate = reliability_gate(
        est.snr, threshold, n_arch=est.n_arch, predicted_spearman=est.predicted_spearman
    )
    res.numbers = {**est.to_dict(), "gate": gate.to_dict(), "budget": budget}
    proxy = {a: mean(v) for a, v in groups.items()}
    reference = arch_scores(evaluations, dataset, reference_budget)
    common = sorted(proxy.keys() & reference.keys())
    res.samples["reference_pairs"] = len(common)
    res.series["pairs"] = [[proxy[a], reference[a]] for a in common]
    res.numbers["reference_budget"] = reference_budget
    base = (
        f"SNR {est.snr:.3g} (sigma^2_arch {est.sigma2_arch:.3g} / sigma^2_noise "
        f"{est.sigma2_noise:.3g}, {est.n_arch} architectures), predicted rho_S "
        f"{est.predicted_spearman:.3f}" + ("; below the gate threshold" if gate.low else "")
    )
    if len(common) < MIN_SPEARMAN_PAIRS:
        res.summary = f"{base}; {len(common)} reference pair(s), {MIN_SPEARMAN_PAIRS} needed"
        return res
    try:
        measured = spearman([proxy[a] for a in common], [reference[a] for a in common])
    except ValueError as exc:  # one side constant: the ranking says nothing
        res.summary = f"{base}; measured Spearman undefined ({exc})"
        return res
    lo, hi = spearman_interval(measured, len(common))
    low, high = spearman_range(est.rho_p, len(common))
    res.numbers |= {
        "measured_spearman": measured,
        "measured_lo": lo,
        "measured_hi": hi,
        "predicted_lo": low,
        "predicted_hi": high,
    }
    inside = low <= measured <= high
    res.status = SUPPORTED if inside else NOT_SUPPORTED
    res.summary = (
        f"{base}; measured Spearman vs {reference_budget} {measured:.3f} over {len(common)} "
        f"architectures, "
        + ("inside" if inside else "outside")
        + f" the predicted 95% range for {len(common)} [{low:.3f}, {high:.3f}]"
    )
    return res


# ---- all six ---------------------------------------------------------------------------


def gamma_star(data: RunData) -> float | None:
    """The fixed reference gamma*: ce.reference_gamma, else gamma_1."""
    if data.reference_gamma is not None:
        return data.reference_gamma
    return next((c.gamma_t for c in data.cycles if c.t == 1 and c.status == "completed"), None)


def gate_events(cycles: Sequence[CycleRow]) -> list[dict[str, Any]]:
    """The driver's gate decisions as stored with each cycle's settings."""
    out = []
    for c in cycles:
        gate = (c.settings or {}).get("gate") or {}
        if gate:
            out.append({"t": c.t, **gate, "low": bool(gate.get("low", False))})
    return out


def diagnose(data: RunData) -> dict[str, Result]:
    samples = samples_by_cycle(data)
    results = [
        ce_equivalence(data.cycles, data.adapters),
        monotonicity(elite_scores_by_cycle(data), {c.t: c.gamma_t for c in data.cycles}, samples),
        elite_mass(samples, gamma_star(data)),
        delta_vs_full(data.candidates),
        no_collapse(data.candidates, data.signatures, data.codes),
        proxy_reliability(
            data.evaluations, data.dataset, data.budget, data.reference_budget, data.snr_threshold
        ),
    ]
    results[-1].numbers["gate_events"] = gate_events(data.cycles)
    return {r.key: r for r in results}
