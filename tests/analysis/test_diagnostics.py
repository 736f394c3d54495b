"""Diagnostics on synthetic data whose answers are known in closed form."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from llmnas_dist.analysis.gate import noise_gate, reliability_gate
from llmnas_dist.analysis.results import (
    INSUFFICIENT,
    NOT_SUPPORTED,
    SUPPORTED,
    ce_equivalence,
    delta_vs_full,
    diagnose,
    elite_mass,
    elite_mass_bound,
    monotonicity,
    no_collapse,
    proxy_reliability,
)
from llmnas_dist.analysis.rundata import (
    AdapterRow,
    CandidateRow,
    CycleRow,
    EvalRow,
    RunData,
    elite_scores_by_cycle,
    samples_by_cycle,
)
from llmnas_dist.analysis.stats import (
    decreases,
    json_safe,
    mann_kendall,
    markov_predicted_ratio,
    markov_token_error,
    mean_pairwise_jaccard,
    spearman_interval,
    spearman_range,
    structure_key,
    top_rho,
    two_proportion_test,
    wilson_interval,
)

# ---- statistics ------------------------------------------------------------------------


def test_wilson_interval_known_values() -> None:
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0)
    for bad in ((1, 0), (-1, 5), (6, 5)):
        with pytest.raises(ValueError):
            wilson_interval(*bad)


def test_two_proportion_test_closed_form() -> None:
    z, p = two_proportion_test(30, 40, 20, 40)
    se = math.sqrt(0.625 * 0.375 * (2 / 40))
    assert z == pytest.approx(0.25 / se)
    assert p == pytest.approx(0.5 * math.erfc(z / math.sqrt(2)))
    assert p == pytest.approx(0.01046, abs=1e-4)


def test_markov_token_error_model() -> None:
    eps = markov_token_error(0.5, 200)
    assert (1 - eps) ** 200 == pytest.approx(0.5)
    # ratio = p_full^(L_delta / L_full - 1) = 0.5^-0.75
    assert markov_predicted_ratio(0.5, 200, 50) == pytest.approx(2**0.75)
    assert markov_predicted_ratio(1.0, 200, 50) == pytest.approx(1.0)
    assert math.isnan(markov_predicted_ratio(0.0, 200, 50))
    with pytest.raises(ValueError):
        markov_token_error(1.5, 10)


def test_mann_kendall_on_constructed_sequences() -> None:
    up = mann_kendall([1, 2, 3, 4, 5])
    # S = 10, var = 5*4*15/18, z = (S - 1)/sqrt(var)
    assert (up.s, up.tau, up.slope) == (10, 1.0, 1.0)
    assert up.z == pytest.approx(9 / math.sqrt(5 * 4 * 15 / 18))
    assert up.p_value == pytest.approx(0.0275, abs=1e-4)
    assert up.direction == "increasing"
    assert mann_kendall([5, 4, 3, 2, 1]).direction == "decreasing"
    flat = mann_kendall([2, 2, 2, 2])
    assert flat.s == 0 and flat.p_value == 1.0 and flat.direction == "no trend"
    ties = mann_kendall([1, 1, 2])  # one tie group of 2: var = (66 - 18) / 18
    assert ties.s == 2 and ties.z == pytest.approx(1 / math.sqrt(48 / 18))
    assert mann_kendall([1, 2, 3], times=[0, 2, 4]).slope == pytest.approx(0.5)
    with pytest.raises(ValueError):
        mann_kendall([1, 2])


def test_decreases_and_top_rho() -> None:
    assert decreases([1.0, 2.0, 1.5, 1.5, 1.0]) == [(2, 0.5), (4, 0.5)]
    assert decreases([1.0, 1.0, 2.0]) == []
    assert top_rho([1, 5, 3, 2, 4], 0.25) == [5, 4]  # ceil(1.25) = 2
    assert top_rho([1, 5, 3, 2, 4], 0.25, min_elites=3) == [5, 4, 3]
    assert top_rho([1.0], 0.25, min_elites=3) == [1.0]


def test_spearman_interval_covers_and_narrows() -> None:
    lo, hi = spearman_interval(0.5, 28)  # Fisher z: atanh(0.5) +- 1.96 sqrt(1.06/25)
    half = 1.959963984540054 * math.sqrt(1.06 / 25)
    assert (lo, hi) == pytest.approx(
        (math.tanh(math.atanh(0.5) - half), math.tanh(math.atanh(0.5) + half))
    )
    assert spearman_interval(0.5, 100)[0] > lo
    with pytest.raises(ValueError):
        spearman_interval(0.5, 3)


def test_spearman_range_holds_a_perfect_ranking_of_few_pairs_and_narrows() -> None:
    lo, hi = spearman_range(0.957, 6)
    assert hi == 1.0 and 0.4 < lo < 0.8  # a perfect ranking of 6 fits the prediction
    assert spearman_interval(1.0, 6)[0] > 0.999  # where Fisher's z about 1.0 collapses
    wide, narrow = spearman_range(0.5, 12), spearman_range(0.5, 100)
    closed_form = 6 / math.pi * math.asin(0.25)
    assert wide[0] < narrow[0] < closed_form < narrow[1] < wide[1]
    assert spearman_range(0.5, 12) == wide  # seeded: a report says the same twice
    assert spearman_range(1.0, 6) == (1.0, 1.0)  # a noise-free proxy ranks perfectly
    for rho_p, n in ((0.5, 3), (1.5, 6)):
        with pytest.raises(ValueError):
            spearman_range(rho_p, n)


def test_mean_pairwise_jaccard_closed_form() -> None:
    a = np.arange(128, dtype=np.uint32)
    b = a.copy()
    b[64:] += 1000  # shares half of a's values
    c = a + 5000  # shares none
    assert mean_pairwise_jaccard([a, a]) == 1.0
    assert mean_pairwise_jaccard([a, b, c]) == pytest.approx(0.5 / 3)
    with pytest.raises(ValueError):
        mean_pairwise_jaccard([a])


def test_structure_key_ignores_numbers_and_comments() -> None:
    base = "x = nn.Conv2d(3, 64, 3)  # stem\ny = 0.5\n"
    assert structure_key(base) == structure_key("x = nn.Conv2d(3, 128, 5)\ny = 0.25\n")
    assert structure_key(base) != structure_key("x = nn.Linear(3, 64, 3)\ny = 0.5\n")


def test_json_safe_is_strict_json() -> None:
    out = json_safe({"a": math.inf, "b": math.nan, "c": (1, np.float64(2.5)), "d": -math.inf})
    assert json.loads(json.dumps(out, allow_nan=False)) == {
        "a": "inf", "b": None, "c": [1, 2.5], "d": "-inf"
    }  # fmt: skip


# ---- the gate --------------------------------------------------------------------------


def test_reliability_gate() -> None:
    assert reliability_gate(0.5, 1.0).low
    assert not reliability_gate(1.0, 1.0).low
    assert not reliability_gate(math.inf, 1.0).low
    assert not reliability_gate(math.nan, 1.0).low
    with pytest.raises(ValueError):
        reliability_gate(0.5, -1.0)
    d = 0.05
    rows = [(f"a{i}", s, m + (d if s else -d)) for i, m in enumerate([0.1, 0.2, 0.3, 0.4])
            for s in (0, 1)]  # fmt: skip
    gate = noise_gate(rows, threshold=3.0)
    var_means = sum((m - 0.25) ** 2 for m in [0.1, 0.2, 0.3, 0.4]) / 3
    snr = (var_means - d * d) / (2 * d * d)  # 2.833...
    assert gate is not None and gate.snr == pytest.approx(snr) and gate.low
    assert gate.to_dict()["n_archs"] == 4 and "below" in gate.message
    assert noise_gate(rows, threshold=2.0).low is False  # type: ignore[union-attr]
    assert noise_gate(rows[:2] + [("b", 0, 0.5)], threshold=1.0) is None  # one repeated arch


# ---- the six results -------------------------------------------------------------------


def test_ce_equivalence() -> None:
    cycles = [CycleRow(t, "completed", n_elites=2) for t in range(4)]
    ok = ce_equivalence(cycles, [AdapterRow(t, t, 4, 1.0 / t) for t in (1, 2, 3)])
    assert ok.status == SUPPORTED and ok.series["train_loss"] == [1.0, 0.5, pytest.approx(1 / 3)]
    nan = ce_equivalence(cycles, [AdapterRow(1, 1, 4, math.nan), AdapterRow(2, 2, 4, 0.5)])
    assert nan.status == NOT_SUPPORTED and nan.numbers["bad_updates"] == [1]
    assert nan.numbers["cycles_without_update"] == []  # cycle 3's update waits for a cycle 4
    gap = ce_equivalence(cycles, [AdapterRow(1, 1, 4, 0.5)])
    assert gap.numbers["cycles_without_update"] == [2] and "1 of 2 CE updates due" in gap.summary
    assert ce_equivalence(cycles, [AdapterRow(0, 0, 16, 0.9)]).status == INSUFFICIENT


def test_monotonicity() -> None:
    up = monotonicity({0: [0.5], 1: [0.6, 0.5], 2: [0.7, 0.6], 3: [0.8, 0.7]}, {}, {})
    assert up.status == SUPPORTED
    assert up.series["elite_mean"] == pytest.approx([0.5, 0.55, 0.65, 0.75])
    assert up.numbers["elite_trend"]["s"] == 6
    down = monotonicity({0: [0.5], 1: [0.6], 2: [0.55]}, {0: 0.5, 1: 0.6, 2: 0.55}, {})
    assert down.status == NOT_SUPPORTED
    assert down.numbers["decreases"] == [{"t": 2, "drop": pytest.approx(0.05)}]
    assert down.numbers["gamma_decreases"] == 1
    assert monotonicity({1: [0.5]}, {}, {}).status == INSUFFICIENT


def test_elite_mass_against_its_bound() -> None:
    def cycle(above: int, n: int = 10) -> list[float]:
        return [1.0] * above + [0.0] * (n - above)

    res = elite_mass({0: cycle(9), 1: cycle(2), 2: cycle(4), 3: cycle(5)}, gamma_star=0.5)
    assert res.status == SUPPORTED
    assert res.numbers["rho_0"] == pytest.approx(0.2)  # C_1
    assert res.series["t"] == [1, 2, 3]  # cycle 0 (the seeds) is not an LLM sample
    assert res.series["c_t"] == pytest.approx([0.2, 0.4, 0.5])
    assert res.series["bound"] == pytest.approx([0.2, 0.36, 1 - 0.8**3])
    assert elite_mass_bound(0.2, 3) == pytest.approx(0.488)
    # 0 of 10 above at t=3: Wilson upper bound 0.2775 < 0.488
    low = elite_mass({1: cycle(2), 2: cycle(4), 3: cycle(0)}, gamma_star=0.5)
    assert low.status == NOT_SUPPORTED and low.numbers["below_bound"] == [3]
    assert elite_mass({1: cycle(2)}, gamma_star=0.5).status == INSUFFICIENT
    assert elite_mass({1: cycle(2), 2: cycle(3)}, gamma_star=None).status == INSUFFICIENT


def _cands(mode: str, n: int, valid: int, tokens: int, cycle: int = 1) -> list[CandidateRow]:
    ok = [CandidateRow(cycle, i, 0, mode, "evaluated", arch_hash=f"{mode}{cycle}-{i}",
                       output_tokens=tokens) for i in range(valid)]  # fmt: skip
    bad = [CandidateRow(cycle, i, 0, mode, "rejected", error_class="syntax_error",
                        output_tokens=tokens) for i in range(valid, n)]  # fmt: skip
    return ok + bad


def test_delta_vs_full_with_the_markov_prediction() -> None:
    seeds = [
        CandidateRow(0, i, 0, "full", "rejected", error_class="build_failed") for i in range(9)
    ]
    res = delta_vs_full(_cands("delta", 20, 15, 50) + _cands("full", 20, 8, 200) + seeds)
    assert res.samples == {"delta": 20, "full": 20}  # cycle 0 left out
    d, f = res.numbers["delta"], res.numbers["full"]
    assert (d["rate"], f["rate"]) == (0.75, 0.4)
    assert (d["lo"], d["hi"]) == pytest.approx(wilson_interval(15, 20))
    assert res.numbers["observed_ratio"] == pytest.approx(1.875)
    assert res.numbers["predicted_ratio"] == pytest.approx(0.4**-0.75)
    assert res.numbers["p_value"] == pytest.approx(two_proportion_test(15, 20, 8, 20)[1])
    assert res.status == SUPPORTED
    same = delta_vs_full(_cands("delta", 20, 8, 50) + _cands("full", 20, 8, 200))
    assert same.status == NOT_SUPPORTED
    assert delta_vs_full(_cands("delta", 20, 15, 50) + _cands("full", 5, 2, 200)).status == (
        INSUFFICIENT
    )


def test_deltas_admitted_without_a_hunk_are_counted_apart() -> None:
    from llmnas_dist.vocab import hunk_left_out

    deltas = _cands("delta", 12, 7, 50)
    note = "fuzz note; " + hunk_left_out(2, 3, "build_failed: RuntimeError: ...")
    deltas[:2] = [replace(row, message=note) for row in deltas[:2]]
    # rejected all the same: not counted
    deltas[-1] = replace(deltas[-1], message=hunk_left_out(1, 2, "build_failed: x"))
    res = delta_vs_full(deltas + _cands("full", 10, 1, 200))
    assert res.numbers["delta"]["hunk_left_out"] == 2 and res.numbers["full"]["hunk_left_out"] == 0
    assert "(7/12, 2 without a hunk)" in res.summary
    plain = delta_vs_full(_cands("delta", 12, 7, 50) + _cands("full", 10, 1, 200))
    assert "without a hunk" not in plain.summary


def test_novelty_rejected_programs_count_as_valid() -> None:
    rows = [
        CandidateRow(1, 0, 0, "delta", "rejected", error_class="not_novel"),
        CandidateRow(1, 1, 0, "delta", "failed", error_class="timeout", arch_hash="h"),
        CandidateRow(1, 2, 0, "delta", "rejected", error_class="hunk_not_found"),
        CandidateRow(1, 3, 0, "delta", "generated"),
        CandidateRow(1, 4, 0, "delta", "rejected", error_class="prompt_too_long"),
    ]
    assert [c.valid for c in rows] == [True, True, False, False, False]
    res = delta_vs_full(rows)
    # undecided and never-answered candidates are not samples of the LLM
    assert res.numbers["delta"]["n"] == 3 and res.numbers["delta"]["valid"] == 2


def test_a_retry_counts_as_an_attempt_and_rescues_its_slot() -> None:
    rows = [
        CandidateRow(1, 0, 0, "delta", "rejected", error_class="hunk_not_found"),
        CandidateRow(1, 0, 1, "delta", "evaluated", arch_hash="h"),
        CandidateRow(1, 1, 0, "delta", "rejected", error_class="bad_hunk"),
    ]
    d = delta_vs_full(rows).numbers["delta"]
    assert (d["n"], d["valid"], d["retries"]) == (3, 1, 1)
    assert (d["slots"], d["slots_valid"]) == (2, 1)


def test_samples_use_the_budget_their_cycle_evaluated_with() -> None:
    cycles = [
        CycleRow(1, "completed", settings={"budget": "epochs=1"}),
        CycleRow(2, "completed", settings={"budget": "epochs=2"}),  # the gate raised it
    ]
    cands = [CandidateRow(t, 0, 0, "delta", "evaluated", arch_hash=f"h{t}") for t in (1, 2)]
    evals = [
        EvalRow("h1", "digits", 0, "epochs=1", 0.5),
        EvalRow("h1", "digits", 0, "epochs=2", 0.6),
        EvalRow("h2", "digits", 0, "epochs=2", 0.7),
    ]
    data = RunData("r", "digits", "epochs=2", {}, cycles, cands, evals)
    assert samples_by_cycle(data) == {1: [0.5], 2: [0.7]}


def _diverse_cycle(t: int, rejected: int, n: int = 10) -> tuple[list[CandidateRow], dict]:
    rows, sigs = [], {}
    for i in range(n):
        if i < rejected:
            rows.append(CandidateRow(t, i, 0, "delta", "rejected", error_class="not_novel"))
        else:
            h = f"c{t}-{i}"
            rows.append(CandidateRow(t, i, 0, "delta", "evaluated", arch_hash=h))
            sigs[h] = np.arange(128, dtype=np.uint32) + 1000 * (t * n + i)
    return rows, sigs


def test_no_collapse_trends() -> None:
    steady = [_diverse_cycle(t, 1) for t in range(1, 6)]
    rows = [r for cyc, _ in steady for r in cyc]
    sigs = {h: s for _, cyc in steady for h, s in cyc.items()}
    codes = {h: f"layer_{h.replace('-', '_')} = 1\n" for h in sigs}
    res = no_collapse(rows, sigs, codes)
    assert res.status == SUPPORTED
    assert res.series["rejection_rate"] == pytest.approx([0.1] * 5)
    assert res.series["mean_jaccard"] == pytest.approx([0.0] * 5)
    assert res.series["distinct_structures"] == [9] * 5
    assert "mean pairwise Jaccard 0.000, 9 distinct structures of 9 programs" in res.summary
    # a last cycle that admitted nothing says so, not "nan" of "0 programs"
    ended = [*steady[:4], _diverse_cycle(5, 10)]
    res = no_collapse([r for cyc, _ in ended for r in cyc], sigs, codes)
    assert "of 10 valid, 0 program(s) admitted;" in res.summary and "nan" not in res.summary
    rising = [_diverse_cycle(t, t) for t in range(1, 6)]  # 10%, 20%, ... rejected
    rows = [r for cyc, _ in rising for r in cyc]
    sigs = {h: s for _, cyc in rising for h, s in cyc.items()}
    res = no_collapse(rows, sigs, {})
    assert res.status == NOT_SUPPORTED and "rejection_rate" in res.summary
    assert res.numbers["trends"]["rejection_rate"]["direction"] == "increasing"
    assert no_collapse(rows[:20], sigs, {}).status == INSUFFICIENT  # two cycles


def _noise_rows(means: list[float], d: float, budget: str = "epochs=1") -> list[EvalRow]:
    return [EvalRow(f"a{i}", "digits", s, budget, m + (d if s else -d))
            for i, m in enumerate(means) for s in (0, 1)]  # fmt: skip


def test_proxy_reliability_closed_form_and_measured_spearman() -> None:
    means = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    d = 0.05
    # reference ranking with two adjacent swaps: Spearman 1 - 6*4/(6*35)
    reference = [EvalRow(f"a{i}", "digits", 0, "epochs=5", r)
                 for i, r in enumerate([0.2, 0.1, 0.3, 0.5, 0.4, 0.6])]  # fmt: skip
    res = proxy_reliability(_noise_rows(means, d) + reference, "digits", "epochs=1",
                            "epochs=5", threshold=1.0)  # fmt: skip
    var_means = sum((m - 0.35) ** 2 for m in means) / 5
    snr = (var_means - d * d) / (2 * d * d)
    rho_p = math.sqrt(snr / (1 + snr))
    assert res.numbers["sigma2_noise"] == pytest.approx(2 * d * d)
    assert res.numbers["snr"] == pytest.approx(snr)
    assert res.numbers["predicted_spearman"] == pytest.approx(6 / math.pi * math.asin(rho_p / 2))
    assert res.numbers["measured_spearman"] == pytest.approx(1 - 24 / 210)
    assert res.samples == {"noise_archs": 6, "noise_scores": 12, "reference_pairs": 6}
    assert res.status == SUPPORTED and not res.numbers["gate"]["low"]
    # a reversed reference ranking contradicts the (high) predicted Spearman
    reverse = [EvalRow(f"a{i}", "digits", 0, "epochs=5", -m) for i, m in enumerate(means)]
    bad = proxy_reliability(_noise_rows(means, d) + reverse, "digits", "epochs=1", "epochs=5", 1.0)
    assert bad.status == NOT_SUPPORTED and bad.numbers["measured_spearman"] == pytest.approx(-1.0)
    # a perfect ranking of 6 lies in the prediction's range (Fisher's z about 1.0 is [1, 1])
    same = [EvalRow(f"a{i}", "digits", 0, "epochs=5", m) for i, m in enumerate(means)]
    perfect = proxy_reliability(_noise_rows(means, d) + same, "digits", "epochs=1", "epochs=5", 1.0)
    assert perfect.numbers["measured_spearman"] == pytest.approx(1.0)
    assert perfect.status == SUPPORTED and "inside the predicted 95% range" in perfect.summary
    assert perfect.numbers["predicted_lo"] < 0.9 and perfect.numbers["predicted_hi"] == 1.0
    alone = proxy_reliability(_noise_rows(means, d), "digits", "epochs=1", "epochs=5", 100.0)
    assert alone.status == INSUFFICIENT and alone.numbers["gate"]["low"]
    assert "below the gate threshold" in alone.summary
    other = proxy_reliability(_noise_rows(means, d, "epochs=2"), "digits", "epochs=1", "e", 1.0)
    assert other.status == INSUFFICIENT and other.samples["noise_archs"] == 0


def test_diagnose_a_synthetic_run_end_to_end() -> None:
    cycles = [
        CycleRow(0, "completed", gamma_t=0.3, n_elites=1, elite_scores=(0.3,)),
        CycleRow(1, "completed", gamma_t=0.5, n_elites=2, elite_scores=(0.6, 0.5)),
        CycleRow(2, "completed", gamma_t=0.6, n_elites=2, elite_scores=(0.7, 0.6),
                 settings={"gate": {"snr": 0.4, "threshold": 1.0, "n_archs": 2, "low": True}}),
        CycleRow(3, "running"),
    ]  # fmt: skip
    cands = [CandidateRow(0, 0, 0, "full", "evaluated", arch_hash="s0")]
    scores = {"s0": 0.3}
    for t, vals in ((1, [0.6, 0.5, 0.2, 0.1]), (2, [0.7, 0.6, 0.55, 0.4])):
        for i, v in enumerate(vals):
            cands.append(CandidateRow(t, i, 0, "delta", "evaluated", arch_hash=f"h{t}{i}"))
            scores[f"h{t}{i}"] = v
    evals = [EvalRow(h, "digits", 0, "epochs=1", v) for h, v in scores.items()]
    data = RunData("r1", "digits", "epochs=1", {"ce": {"rho": 0.25}}, cycles, cands, evals,
                   [AdapterRow(1, 1, 2, 0.8), AdapterRow(2, 2, 2, 0.6)])  # fmt: skip
    results = diagnose(data)
    assert list(results) == ["ce_equivalence", "monotonicity", "elite_mass", "delta_vs_full",
                             "no_collapse", "proxy_reliability"]  # fmt: skip
    assert results["ce_equivalence"].status == SUPPORTED
    assert results["monotonicity"].series["elite_mean"] == pytest.approx([0.3, 0.55, 0.65])
    # gamma* = gamma_1 = 0.5: C_1 = 2/4, C_2 = 3/4 >= 1 - 0.5^2
    assert results["elite_mass"].series["c_t"] == [0.5, 0.75]
    assert results["elite_mass"].status == SUPPORTED
    assert results["proxy_reliability"].numbers["gate_events"][0]["low"] is True
    json.dumps([r.to_dict() for r in results.values()], allow_nan=False)
    # without snapshots E_t is recomputed: elitist top ceil(rho * N) of cycles <= t
    bare = [CycleRow(c.t, c.status, c.gamma_t) for c in cycles]
    data.cycles = bare
    assert elite_scores_by_cycle(data) == {0: [0.3], 1: [0.6, 0.5], 2: [0.7, 0.6, 0.6]}
    data.config = {"ce": {"rho": 0.25, "reference_gamma": 0.65}}
    assert diagnose(data)["elite_mass"].numbers["gamma_star"] == 0.65
