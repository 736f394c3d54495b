"""llmnas_dist/analysis/timeline.py: busy time, group shares, critical path and scaling advice, each
checked against numbers worked out by hand for small constructed cycles."""

from __future__ import annotations

import math

import pytest

from llmnas_dist.analysis.timeline import (
    busy_seconds,
    cycle_use,
    run_uses,
    shares_text,
    to_json,
)
from llmnas_dist.spans import Span

T0 = 1_700_000_000.0  # Unix seconds, as the actors record them


def span(kind: str, actor: str, start: float, end: float, **kw) -> Span:
    return Span(kind, actor, T0 + start, T0 + end, **kw)


# ---- busy_seconds ----------------------------------------------------------------------


def test_busy_seconds_counts_overlaps_once() -> None:
    # [0,4] and [2,6] overlap in [2,4]: union [0,6]; [8,9] is apart; [8.5,8.7] inside it
    assert busy_seconds([(0, 4), (2, 6), (8, 9), (8.5, 8.7)], 0, 10) == pytest.approx(7.0)


def test_busy_seconds_clips_to_the_window() -> None:
    # [-5,2] -> [0,2]; [9,20] -> [9,10]; [11,12] wholly outside
    assert busy_seconds([(-5, 2), (9, 20), (11, 12)], 0, 10) == pytest.approx(3.0)
    assert busy_seconds([(4, 4), (6, 5.5)], 0, 10) == 0.0  # empty and inverted add nothing
    assert busy_seconds([], 0, 10) == 0.0


def test_busy_seconds_order_does_not_matter() -> None:
    intervals = [(7, 9), (0, 3), (2, 5), (8, 10)]
    assert busy_seconds(intervals, 1, 9.5) == pytest.approx(4.0 + 2.5)  # [1,5] + [7,9.5]


# ---- Span ------------------------------------------------------------------------------


def test_span_validation() -> None:
    with pytest.raises(ValueError, match="ends before it starts"):
        Span("evaluate", "e1", 10.0, 9.0)
    with pytest.raises(ValueError):
        Span("sleep", "e1", 1.0, 2.0)  # not a SpanKind
    with pytest.raises(ValueError):
        Span("evaluate", "e1", 1.0, 2.0, outcome="vanished")  # not a SpanOutcome
    with pytest.raises(ValueError, match="finite"):
        Span("evaluate", "e1", 1.0, math.inf)
    s = Span("finetune", "f", 3.0, 3.0)  # zero length is allowed
    assert (s.seconds, s.group, s.at(4).cycle) == (0.0, "finetuner", 4)
    assert Span("admit", "driver", 0, 1).group == "driver"
    assert Span("study", "e", 0, 1).group == "evaluator"


# ---- one cycle -------------------------------------------------------------------------


def evaluation_bound_cycle() -> list[Span]:
    """Cycle [0, 50]: generation [0, 20], evaluations until 40, one attempt lost.

    busy: g 20 (its two calls overlap in [10, 12]), driver 2, e1 27 ([13,35] u [21,40]),
    e2 5 + 19 = 24, e3 20, f 10. Evaluation work in [0, 40]: 27 + 24 + 20 = 71, of which
    20 + 19 + 18 = 57 after the last answer; the longest evaluation takes 11 s.
    """
    return [
        span("generate", "g", 0, 12, node_id="nodeA", gpu_id="0"),
        span("generate", "g", 10, 20, node_id="nodeA", gpu_id="0"),
        span("admit", "driver", 12, 13),
        span("admit", "driver", 20, 21),
        span("evaluate", "e1", 13, 24, key="c1"),
        span("evaluate", "e1", 24, 35, key="c5"),
        span("evaluate", "e1", 21, 31, key="c3"),
        span("evaluate", "e1", 31, 40, key="c6"),
        span("evaluate", "e2", 13, 18, key="c2", outcome="lost"),
        span("evaluate", "e2", 21, 30, key="c4"),
        span("evaluate", "e2", 30, 40, key="c7"),
        span("evaluate", "e3", 18, 28, key="c2", attempt=2),
        span("evaluate", "e3", 28, 38, key="c8"),
        span("finetune", "f", 40, 50),
    ]


def test_shares_critical_path_and_keep_pace_of_an_evaluation_bound_cycle() -> None:
    use = cycle_use(1, evaluation_bound_cycle(), evaluators=3)
    assert use is not None
    assert (use.started, use.ended, use.seconds) == (T0, T0 + 50, 50)
    share = {u.actor: u.share for u in use.actors}
    assert share == pytest.approx(
        {"g": 0.4, "driver": 0.04, "e1": 0.54, "e2": 0.48, "e3": 0.4, "f": 0.2}
    )
    assert [u.actor for u in use.actors] == ["g", "e1", "e2", "e3", "f", "driver"]
    assert use.group_share == pytest.approx(
        {"generator": 0.4, "evaluator": 1.42 / 3, "finetuner": 0.2, "driver": 0.04}
    )
    # a 20 s tail: longer than the longest evaluation (11 s) and 10% of generation (2 s)
    assert use.critical_path == "evaluation-bound"
    assert (use.generation_s, use.tail_s) == pytest.approx((20.0, 20.0))
    assert use.evaluator_idle == pytest.approx(1 - 71 / (3 * 40))
    # pace with generation needs ceil(71 / 20) = 4; the tail's 57 s in one 11 s turn, 6
    assert use.keep_pace == math.ceil(57 / 11) == 6
    assert use.lost == 1 and use.evaluators == 3


def test_idle_evaluators_count_in_the_group_share() -> None:
    """A pool of 4 where only e1 worked: the evaluator share is e1's over 4, not over 1."""
    spans = [span("generate", "g", 0, 10), span("evaluate", "e1", 2, 7)]
    use = cycle_use(2, spans, evaluators=4)
    assert use is not None
    assert use.group_share["evaluator"] == pytest.approx(0.5 / 4)
    assert use.evaluator_idle == pytest.approx(1 - 5 / (4 * 10))
    # more evaluators seen than the cycle's recorded pool: the spans win
    more = [*spans, span("evaluate", "e2", 3, 4), span("evaluate", "e3", 3, 4)]
    assert cycle_use(2, more, evaluators=1).evaluators == 3  # type: ignore[union-attr]


def test_generation_bound_within_the_tolerance() -> None:
    # generation [0, 30]; the last evaluation ends 2.9 s later: within 10% of 30 s
    spans = [
        span("generate", "g", 0, 30),
        span("evaluate", "e1", 5, 15),
        span("evaluate", "e2", 25, 32.9),
    ]
    use = cycle_use(1, spans, evaluators=2)
    assert use is not None and use.critical_path == "generation-bound"
    assert use.tail_s == pytest.approx(2.9)
    # one more evaluation queued behind e2's: a 15 s tail, over the longest (12 s)
    late = cycle_use(1, [*spans, span("evaluate", "e2", 33, 45)], evaluators=2)
    assert late is not None and late.critical_path == "evaluation-bound"
    # a tail as long as one evaluation is the last answer's own: still generation-bound
    own = cycle_use(1, [*spans, span("evaluate", "e1", 30.5, 40)], evaluators=2)
    assert own is not None and own.critical_path == "generation-bound"


def test_keep_pace_arithmetic() -> None:
    # work 10 + 10 + 1 = 21 s against 10 s of generation: ceil(2.1) = 3
    spans = [
        span("generate", "g", 0, 10),
        span("evaluate", "e1", 0, 10),
        span("evaluate", "e2", 0, 10),
        span("evaluate", "e3", 9, 10),
    ]
    assert cycle_use(1, spans, evaluators=3).keep_pace == 3  # type: ignore[union-attr]
    # a trickle of work still needs one evaluator
    few = [span("generate", "g", 0, 100), span("evaluate", "e1", 50, 51)]
    assert cycle_use(1, few, evaluators=8).keep_pace == 1  # type: ignore[union-attr]
    # exactly 2.0 evaluators' worth rounds to 2, not 3
    even = [span("generate", "g", 0, 10), *(span("evaluate", e, 0, 10) for e in ("a", "b"))]
    assert cycle_use(1, even, evaluators=2).keep_pace == 2  # type: ignore[union-attr]


def test_a_cycle_without_a_generate_evaluate_phase() -> None:
    assert cycle_use(1, [], evaluators=3) is None
    use = cycle_use(0, [span("warm_start", "f", 0, 30)], evaluators=2)
    assert use is not None
    assert (use.critical_path, use.keep_pace, use.evaluator_idle) == (None, None, None)
    assert use.group_share == {"evaluator": 0.0, "finetuner": 1.0}
    assert use.advice("r") == "cycle 0: no generate-evaluate phase to judge the evaluator count by"


# ---- advice ----------------------------------------------------------------------------


def test_advice_when_evaluation_bound_names_the_scale_command() -> None:
    use = cycle_use(1, evaluation_bound_cycle(), evaluators=3)
    assert use is not None
    assert use.advice("run-7") == (
        "cycle 1 was evaluation-bound: evaluations ran 20 s after the last answer; 6 "
        "evaluators would have kept pace with generation: `llmnas scale run-7 6`"
    )


def test_advice_when_evaluators_idle_suggests_fewer() -> None:
    # generation [0, 40]; one evaluator of 3 busy 10 s; last evaluation ends at 43
    spans = [
        span("generate", "g", 0, 40),
        span("evaluate", "e1", 11, 15),
        span("evaluate", "e1", 21, 25),
        span("evaluate", "e1", 41, 43),
    ]
    use = cycle_use(2, spans, evaluators=3)
    assert use is not None and use.critical_path == "generation-bound"
    assert use.keep_pace == 1
    assert use.evaluator_idle == pytest.approx(1 - 10 / (3 * 43))
    assert use.advice("r") == (
        "evaluators idle 92% of cycle 2's generate-evaluate phase: 1 evaluator(s) would have "
        "kept pace: `llmnas scale r 1`"
    )


def test_advice_when_generation_bound_points_at_generation() -> None:
    # two evaluators busy 9 s each of 10 s of generation: keep_pace 2 == the pool
    spans = [
        span("generate", "g", 0, 10),
        span("evaluate", "e1", 1, 10),
        span("evaluate", "e2", 1, 10),
    ]
    use = cycle_use(3, spans, evaluators=2)
    assert use is not None and use.keep_pace == 2
    advice = use.advice("r")
    assert advice.startswith("cycle 3 was generation-bound with 2 evaluator(s) busy 90%")
    assert "generation.num_actors" in advice and "llmnas scale" not in advice


# ---- a run -----------------------------------------------------------------------------


def test_run_uses_orders_cycles_and_uses_each_pool_size() -> None:
    spans = [s.at(2) for s in evaluation_bound_cycle()]
    spans += [span("generate", "g", 100, 110, cycle=1), span("evaluate", "e1", 101, 105, cycle=1)]
    uses = run_uses(spans, {1: 2, 2: 3})
    assert [u.cycle for u in uses] == [1, 2]
    assert [u.evaluators for u in uses] == [2, 3]
    assert uses[0].group_share["evaluator"] == pytest.approx(0.4 / 2)
    assert shares_text(uses[1]) == "gen 40% eval 47% ft 20% drv 4%"
    data = to_json(uses[1])
    assert data["lost_attempts"] == 1 and data["keep_pace"] == 6
    assert data["critical_path"] == "evaluation-bound" and len(data["actors"]) == 6


def test_a_cycle_that_admitted_nothing_is_generation_bound() -> None:
    """Generation ran 846 s (seen in a real run without warm start), no program was
    admitted: the evaluators idled the whole phase, and more of them would not help."""
    spans = [span("generate", "g", 0, 400), span("generate", "g", 400, 846)]
    spans += [span("admit", "driver", 846, 847)]
    use = cycle_use(1, spans, evaluators=2)
    assert use is not None and use.critical_path == "generation-bound"
    assert (use.generation_s, use.evaluator_idle, use.keep_pace) == (846, 1.0, None)
    assert use.group_share["evaluator"] == 0.0
    advice = use.advice("r")
    assert "admitted nothing to evaluate" in advice and "llmnas scale" not in advice
