"""Where a cycle's time went: busy spans of every actor, their shares, the critical path.

Every generation call, admission, evaluation (each attempt, also one that died with its
actor or node) and fine-tune is one `Span`: what ran, on which actor, node and GPU, from
when to when (Unix seconds, so spans of different nodes share one clock to NTP precision),
and how it ended. The archive keeps them (table `spans`); this module turns one cycle's
spans into what a user deciding on the evaluator count needs (the `Span` record and its
vocabulary live in llmnas_dist/spans.py, shared with the archive and the actors):

- the busy share of each actor group (generators, evaluators, fine-tuner, driver) over the
  cycle, and of each actor (the report's timeline strips);
- the critical path of the cycle's generate-admit-evaluate phase: generation-bound when the
  evaluations end within a little of the last answer, evaluation-bound when they trail it;
- scaling advice: the evaluator count that would have kept pace with generation, the
  evaluation work of the phase divided by the time generation took.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmnas_dist.spans import ActorGroup, Span, SpanKind, SpanOutcome

# the evaluation phase ends this long after the last answer at most, relative to how long
# generation took, and still counts as keeping pace (one short proxy may start last)
PACE_TOLERANCE = 0.10


def busy_seconds(intervals: Iterable[tuple[float, float]], lo: float, hi: float) -> float:
    """Length of the union of `intervals` clipped to [lo, hi] (overlaps count once: an
    evaluator holding two queued tasks is busy once)."""
    total, reach = 0.0, lo
    for start, end in sorted(intervals):
        start, end = max(start, reach), min(end, hi)
        if end > start:
            total += end - start
            reach = end
    return total


@dataclass(frozen=True)
class ActorUse:
    actor: str
    group: str
    node_id: str | None
    gpu_id: str | None
    busy_s: float
    share: float
    spans: list[Span] = field(repr=False)


@dataclass(frozen=True)
class CycleUse:
    """One cycle's utilisation, critical path and scaling advice."""

    cycle: int
    started: float
    ended: float
    actors: list[ActorUse]
    group_share: dict[str, float]  # group -> mean busy share of its actors over the cycle
    critical_path: str | None  # "generation-bound" | "evaluation-bound" | None (no such phase)
    generation_s: float  # first call sent .. last answer back
    tail_s: float  # candidate evaluations still running after the last answer
    evaluators: int
    evaluator_idle: float | None  # share of the generate-evaluate phase the evaluators idled
    keep_pace: int | None  # evaluators that would have kept pace with generation
    lost: int  # attempts that died with their actor or node

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    def advice(self, run_id: str) -> str:
        """One line a user can act on, with the command to do it."""
        t, n, need = self.cycle, self.evaluators, self.keep_pace
        if self.critical_path == "generation-bound" and need is None:
            return (
                f"cycle {t}: generation ran {self.generation_s:.0f} s and admitted nothing to "
                "evaluate: the evaluators idled; the proposals' valid rate is the long pole "
                "(warm start, constrained decoding), not the evaluator count"
            )
        if need is None or self.evaluator_idle is None:
            return f"cycle {t}: no generate-evaluate phase to judge the evaluator count by"
        cmd = f"`llmnas scale {run_id} {need}`"
        idle = f"evaluators idle {self.evaluator_idle:.0%} of cycle {t}'s generate-evaluate phase"
        if self.critical_path == "evaluation-bound":
            return (
                f"cycle {t} was evaluation-bound: evaluations ran {self.tail_s:.0f} s after the "
                f"last answer; {need} evaluators would have kept pace with generation: {cmd}"
            )
        if need < n:
            return f"{idle}: {need} evaluator(s) would have kept pace: {cmd}"
        return (
            f"cycle {t} was generation-bound with {n} evaluator(s) busy "
            f"{1 - self.evaluator_idle:.0%}: more evaluators would not shorten it; more "
            "generation actors (generation.num_actors) or inference GPUs would"
        )


def actor_uses(spans: Sequence[Span], lo: float, hi: float) -> list[ActorUse]:
    by_actor: dict[str, list[Span]] = {}
    for s in spans:
        by_actor.setdefault(s.actor, []).append(s)
    uses = []
    for actor, mine in by_actor.items():
        busy = busy_seconds(((s.started, s.ended) for s in mine), lo, hi)
        first = mine[0]
        uses.append(
            ActorUse(
                actor,
                first.group,
                first.node_id,
                next((s.gpu_id for s in mine if s.gpu_id), None),
                busy,
                busy / (hi - lo) if hi > lo else 0.0,
                sorted(mine, key=lambda s: s.started),
            )
        )
    order = [g.value for g in ActorGroup]
    return sorted(uses, key=lambda u: (order.index(u.group), u.node_id or "", u.actor))


def group_shares(uses: Sequence[ActorUse], evaluators: int) -> dict[str, float]:
    """Mean busy share per group; evaluators that did nothing count as idle ones."""
    shares: dict[str, float] = {}
    for group in ActorGroup:
        members = [u for u in uses if u.group == group.value]
        count = max(len(members), evaluators if group is ActorGroup.EVALUATOR else 0)
        if count:
            shares[group.value] = sum(u.share for u in members) / count
    return shares


def cycle_use(cycle: int, spans: Sequence[Span], evaluators: int) -> CycleUse | None:
    """The utilisation of one cycle from its spans (None when it has none)."""
    if not spans:
        return None
    lo = min(s.started for s in spans)
    hi = max(s.ended for s in spans)
    uses = actor_uses(spans, lo, hi)
    gen = [s for s in spans if s.kind == SpanKind.GENERATE.value]
    evals = [s for s in spans if s.kind == SpanKind.EVALUATE.value]
    evaluators = max(evaluators, len({s.actor for s in evals}))
    lost = sum(s.outcome == SpanOutcome.LOST.value for s in spans)
    if gen and not evals:  # nothing admitted: the evaluators idled through generation
        generation_s = max(s.ended for s in gen) - min(s.started for s in gen)
        return CycleUse(
            cycle, lo, hi, uses, group_shares(uses, evaluators), "generation-bound",
            generation_s, 0.0, evaluators, 1.0, None, lost,
        )  # fmt: skip
    if not gen or not evals:
        return CycleUse(
            cycle,
            lo,
            hi,
            uses,
            group_shares(uses, evaluators),
            None,
            0.0,
            0.0,
            evaluators,
            None,
            None,
            lost,
        )
    gen_lo, gen_hi = min(s.started for s in gen), max(s.ended for s in gen)
    eval_hi = max(s.ended for s in evals)
    generation_s = gen_hi - gen_lo
    tail_s = max(0.0, eval_hi - gen_hi)
    phase_hi = max(gen_hi, eval_hi)
    per_actor: dict[str, list[tuple[float, float]]] = {}
    for s in evals:
        per_actor.setdefault(s.actor, []).append((s.started, s.ended))
    work = sum(busy_seconds(iv, gen_lo, phase_hi) for iv in per_actor.values())
    idle = 1.0 - work / (evaluators * (phase_hi - gen_lo)) if phase_hi > gen_lo else 0.0
    # the last answer's own evaluation must run after it: only a tail longer than the
    # longest evaluation (and than a tenth of generation) means evaluations queued
    longest = max(s.seconds for s in evals)
    queued = tail_s > max(PACE_TOLERANCE * generation_s, longest)
    bound = "evaluation-bound" if queued else "generation-bound"
    keep_pace = max(1, math.ceil(work / generation_s)) if generation_s > 0 else evaluators
    if queued and longest > 0:
        # enough evaluators that the work left after the last answer takes one evaluation
        tail_work = sum(busy_seconds(iv, gen_hi, phase_hi) for iv in per_actor.values())
        keep_pace = max(keep_pace, math.ceil(tail_work / longest))
    return CycleUse(
        cycle,
        lo,
        hi,
        uses,
        group_shares(uses, evaluators),
        bound,
        generation_s,
        tail_s,
        evaluators,
        max(0.0, idle),
        keep_pace,
        lost,
    )


def run_uses(spans: Iterable[Span], evaluators: dict[int, int]) -> list[CycleUse]:
    """Per-cycle utilisation of a run (cycles in order; `evaluators`: cycle -> pool size)."""
    by_cycle: dict[int, list[Span]] = {}
    for s in spans:
        by_cycle.setdefault(s.cycle if s.cycle is not None else -1, []).append(s)
    uses = (cycle_use(t, ss, evaluators.get(t, 0)) for t, ss in sorted(by_cycle.items()))
    return [u for u in uses if u is not None]


def shares_text(use: CycleUse) -> str:
    """`gen 81% eval 34% ft 0%`: the busy shares `llmnas archive runs` prints."""
    short = {"generator": "gen", "evaluator": "eval", "finetuner": "ft", "driver": "drv"}
    return " ".join(f"{short[g]} {v:.0%}" for g, v in use.group_share.items())


def to_json(use: CycleUse) -> dict[str, Any]:
    return {
        "cycle": use.cycle,
        "seconds": round(use.seconds, 3),
        "group_share": {k: round(v, 4) for k, v in use.group_share.items()},
        "critical_path": use.critical_path,
        "generation_s": round(use.generation_s, 3),
        "tail_s": round(use.tail_s, 3),
        "evaluators": use.evaluators,
        "evaluator_idle": None if use.evaluator_idle is None else round(use.evaluator_idle, 4),
        "keep_pace": use.keep_pace,
        "lost_attempts": use.lost,
        "actors": [
            {
                "actor": u.actor,
                "group": u.group,
                "node_id": u.node_id,
                "gpu_id": u.gpu_id,
                "busy_s": round(u.busy_s, 3),
                "share": round(u.share, 4),
            }
            for u in use.actors
        ],
    }
