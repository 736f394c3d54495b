"""The evaluator pool: candidates stream through evaluator actors, results stream back.

- An actor evaluates one candidate at a time and holds at most `evaluation.queue_depth`
  (default 2): the next task already waits on the actor when one finishes, so a short
  proxy does not leave the actor idle for the driver's round trip. Tasks go to the least
  loaded actor first, so no task queues while an actor is idle; an actor that dies loses
  at most the tasks it holds, which are retried.
- Results come back in completion order (`ray.wait` with num_returns=1), never behind a
  batch barrier; the driver passes a callback that records each one as it arrives.
- An actor that dies (ray.kill, node loss, OOM killer) is replaced by a fresh one, and its
  candidate is retried up to `max_attempts` times in all; after that the candidate gets
  one `worker_lost` result. An exception inside the actor (the sandbox could not start)
  is retried the same way. Each task yields exactly one result.
- `resize(n)` grows or shrinks the pool between cycles (shrinking drops idle actors).
- A new actor gets tasks once it has said where it runs (`where()`): a replacement that Ray
  cannot place (its node is gone and no other has room) holds nothing, so the retried
  tasks go to the evaluators that survive. One that holds GPU ids CUDA cannot see stops
  the run with a PlacementError naming them (workers/gpus.py).
- Every attempt becomes a busy span (`on_span`, llmnas_dist/analysis/timeline.py), also one that
  died with its actor or node (outcome `lost`): the archive says which attempts died where.
- Each task runs under the adaptive deadline of its dataset and budget
  (llmnas_dist/evaluation/deadline.py), fed by the durations of the pool's successful results.

Placement lives in `evaluator_placement`: one GPU per actor when the cluster has GPUs
(so one pinned evaluator per GPU), otherwise `cpus_per_evaluator` CPUs each.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

from llmnas_dist.config import AdmissionConfig, EvaluationConfig
from llmnas_dist.errors import PlacementError
from llmnas_dist.evaluation.deadline import Deadlines
from llmnas_dist.evaluation.evaluate import EvalRecord
from llmnas_dist.spans import Span, SpanOutcome, Where
from llmnas_dist.vocab import budget_key
from workers.evaluator import EvalTask, EvaluatorActor, worker_lost

if TYPE_CHECKING:
    from db.contract import ArchiveStore

log = logging.getLogger(__name__)

CPU_MACHINE_EVALUATORS = 2  # evaluators on a cluster without GPUs when none is configured


EVALUATOR_RESOURCE = "llmnas_evaluator"  # custom resource of evaluator nodes (deploy/)


@dataclass(frozen=True)
class Placement:
    count: int
    num_gpus: float
    num_cpus: float
    resources: dict[str, float] = field(default_factory=dict)

    def options(self) -> dict[str, Any]:
        return {
            "num_gpus": self.num_gpus,
            "num_cpus": self.num_cpus,
            "resources": dict(self.resources),
            # spread over nodes: a lost node costs a share of the evaluators, not all of them
            "scheduling_strategy": "SPREAD",
            "max_restarts": 0,
        }


def evaluator_placement(cfg: EvaluationConfig, cluster_resources: dict[str, float]) -> Placement:
    """How many evaluators, and what each asks Ray for, given the cluster's resources.

    A cluster whose evaluator nodes carry the `llmnas_evaluator` resource (deploy/) gets one
    evaluator per such GPU, pinned there, so inference GPUs are left to vLLM.
    """
    gpus = int(cluster_resources.get("GPU", 0))
    tagged = int(cluster_resources.get(EVALUATOR_RESOURCE, 0))
    if gpus > 0 and tagged > 0:
        return Placement(
            cfg.evaluators or tagged, 1.0, cfg.cpus_per_evaluator, {EVALUATOR_RESOURCE: 1.0}
        )
    if gpus > 0:
        return Placement(cfg.evaluators or gpus, 1.0, cfg.cpus_per_evaluator)
    return Placement(cfg.evaluators or CPU_MACHINE_EVALUATORS, 0.0, cfg.cpus_per_evaluator)


@dataclass(frozen=True)
class PoolResult:
    """A task's one result, and how many attempts it took."""

    task: EvalTask
    result: EvalRecord
    attempts: int


@dataclass
class _InFlight:
    task: EvalTask
    actor: Any
    attempt: int
    sent: float  # Unix seconds: when it was handed to the actor
    where: Where | None  # the actor's place (kept: a dead actor's is forgotten)


@dataclass
class EvaluatorPool:
    """Evaluator actors with streaming results, bounded retry and replacement."""

    evaluation: EvaluationConfig
    admission: AdmissionConfig | None = None
    placement: Placement | None = None
    # a Ray actor class with evaluate(EvalTask) -> EvalRecord and where() -> Where (default: ours)
    actor_cls: Any = None
    logical_gpus: bool = False  # cluster.logical_gpus: GPU ids without CUDA are allowed
    on_span: Callable[[Span], None] | None = None  # receives every attempt's busy span
    actors: list[Any] = field(default_factory=list)
    replaced: int = 0
    places: list[Where] = field(default_factory=list)  # every actor that started, in order

    def __post_init__(self) -> None:
        self._placement = self.placement or evaluator_placement(
            self.evaluation, ray.cluster_resources()
        )
        self.deadlines = Deadlines(self.evaluation)
        self._load: dict[Any, int] = {}  # actor -> tasks sent to it and not yet back
        self._pending: deque[tuple[EvalTask, int]] = deque()
        self._in_flight: dict[Any, _InFlight] = {}
        self._starting: dict[Any, Any] = {}  # where() ref -> actor not yet ready
        self._where: dict[Any, Where] = {}  # ready actor -> where it runs
        self._start_failures = 0  # actors in a row that died before they were ready
        self.resize(self._placement.count)

    @property
    def device_kind(self) -> str:
        """Where its evaluators train: "cuda" with a GPU each, else "cpu"."""
        return "cuda" if self._placement.num_gpus > 0 else "cpu"

    def _new_actor(self) -> Any:
        actor_cls = self.actor_cls or EvaluatorActor
        extra = {"logical_gpus": True} if self.logical_gpus else {}
        actor: Any = actor_cls.options(**self._placement.options()).remote(
            self.evaluation, self.admission, **extra
        )
        self.actors.append(actor)
        self._load[actor] = 0
        self._starting[actor.where.remote()] = actor
        return actor

    def _started(self, ref: Any) -> None:
        """An actor said where it runs (or died first): it may take tasks now."""
        actor = self._starting.pop(ref)
        try:
            where = ray.get(ref)
        except (ActorDiedError, ActorUnavailableError, RayActorError) as exc:
            # bounded: an evaluator that cannot even start (its class fails to import, its
            # constructor raises) would otherwise be replaced forever
            self._start_failures += 1
            if self._start_failures >= self.evaluation.max_attempts * max(1, len(self.actors)):
                raise RuntimeError(
                    f"evaluators died while starting {self._start_failures} times; last: {exc}"
                ) from exc
            log.warning("evaluator died while starting: %s", type(exc).__name__)
            self._replace(actor)
            return
        self._start_failures = 0
        if where.problem:
            raise PlacementError(where.problem)
        if actor in self._load:
            self._where[actor] = where
            self.places.append(where)

    def wait_ready(self, timeout_s: float | None = None) -> list[Where]:
        """Block until every actor said where it runs; their places."""
        while self._starting:
            ready, _ = ray.wait(list(self._starting), num_returns=1, timeout=timeout_s)
            if not ready:
                break
            self._started(ready[0])
        return [self._where[a] for a in self.actors if a in self._where]

    def resize(self, count: int) -> None:
        """Grow or shrink to `count` actors; call between cycles (busy actors are kept)."""
        if count < 1:
            raise ValueError(f"an evaluator pool needs at least one actor, got {count}")
        while len(self.actors) < count:
            self._new_actor()
        idle = [a for a in self.actors if self._load[a] == 0]
        for actor in idle[: max(0, len(self.actors) - count)]:
            self._forget(actor)
            ray.kill(actor, no_restart=True)
        self._dispatch()

    def _forget(self, actor: Any) -> None:
        self.actors.remove(actor)
        del self._load[actor]
        self._where.pop(actor, None)
        for ref in [r for r, a in self._starting.items() if a is actor]:
            del self._starting[ref]

    def submit(self, tasks: Iterable[EvalTask]) -> None:
        self._pending.extend((task, 1) for task in tasks)
        self._dispatch()

    def in_flight(self) -> dict[str, Any]:
        """Candidate key -> the actor evaluating it now."""
        return {f.task.key: f.actor for f in self._in_flight.values()}

    def _free_actor(self) -> Any | None:
        """The least loaded ready actor that can take one more task (first on ties)."""
        ready = [a for a in self.actors if a in self._where]
        actor = min(ready, key=self._load.__getitem__, default=None)
        if actor is None or self._load[actor] >= self.evaluation.queue_depth:
            return None
        return actor

    def _dispatch(self) -> None:
        while self._pending and (actor := self._free_actor()) is not None:
            task, attempt = self._pending.popleft()
            budget = budget_key(*self._budget(task))
            task = replace(task, deadline_s=self.deadlines.deadline(task.dataset, budget))
            ref = actor.evaluate.remote(task)
            self._load[actor] += 1
            self._in_flight[ref] = _InFlight(
                task, actor, attempt, time.time(), self._where.get(actor)
            )

    def _budget(self, task: EvalTask) -> tuple[float | None, float | None]:
        if task.epochs is None and task.budget_s is None:
            return self.evaluation.epochs, self.evaluation.budget_s
        return task.epochs, task.budget_s

    def _release(self, actor: Any) -> None:
        if actor in self._load:
            self._load[actor] -= 1

    def _replace(self, dead: Any) -> None:
        if dead in self.actors:
            self._forget(dead)
            self._new_actor()
            self.replaced += 1

    def refs(self) -> list[Any]:
        """The object refs to wait on (for a caller's own ray.wait): the evaluations running
        now and the actors still starting."""
        return [*self._in_flight, *self._starting]

    def busy(self) -> bool:
        return bool(self._in_flight or self._pending)

    def collect(self, ref: Any) -> PoolResult | None:
        """Take one finished ref: its result, or None when the task was queued again (its
        actor died, or raised) and will come back under a later ref, or when the ref was
        an actor's start."""
        if ref in self._starting:
            self._started(ref)
            self._dispatch()
            return None
        flight = self._in_flight.pop(ref)
        where = flight.where
        try:
            result = ray.get(ref)
        except (ActorDiedError, ActorUnavailableError, RayActorError) as exc:
            log.warning(
                "evaluator died on %s (attempt %d): %s",
                flight.task.key,
                flight.attempt,
                type(exc).__name__,
            )
            reason = f"actor died ({type(exc).__name__})"
            self._span(flight, where, SpanOutcome.LOST, reason)
            # "unavailable" may be an actor that still runs (its raylet was slow to answer):
            # kill it so it frees its GPU for the replacement rather than linger forgotten
            with contextlib.suppress(Exception):
                ray.kill(flight.actor, no_restart=True)
            self._replace(flight.actor)
            done = self._retry_or_give_up(flight, reason)
        except PlacementError:
            raise
        except Exception as exc:  # noqa: BLE001 - the actor raised: infrastructure, retry
            self._span(flight, where, SpanOutcome.FAILED, str(exc))
            self._release(flight.actor)
            done = self._retry_or_give_up(flight, str(exc)[:500])
        else:
            self._release(flight.actor)
            self._observe(flight, where, result)
            done = PoolResult(flight.task, result, flight.attempt)
        self._dispatch()
        return done

    def _observe(self, flight: _InFlight, where: Where | None, result: EvalRecord) -> None:
        """A result's span, and its duration for the deadlines when it succeeded."""
        if result.ok:  # the archive's duration_s, so a run's own and earlier runs' agree
            self.deadlines.observe(result.dataset, result.budget, result.duration_s)
        outcome = SpanOutcome.OK if result.ok else SpanOutcome.FAILED
        self._span(flight, where, outcome, result.error_class, result.started, result.ended)

    def _span(
        self,
        flight: _InFlight,
        where: Where | None,
        outcome: SpanOutcome,
        message: str | None,
        started: float | None = None,
        ended: float | None = None,
    ) -> None:
        if self.on_span is None:
            return
        started = flight.sent if started is None else started
        span = Span(
            kind=flight.task.kind,
            actor=where.actor if where else "unknown",
            started=started,
            ended=max(started, time.time() if ended is None else ended),
            node_id=where.node_id if where else None,
            gpu_id=where.gpu_id if where else None,
            outcome=outcome.value,
            key=flight.task.key,
            attempt=flight.attempt,
            message=message,
        )
        self.on_span(span)

    def results(self) -> Iterator[PoolResult]:
        """Each submitted task's one result, in completion order, until none is left."""
        while self.busy():
            ready, _ = ray.wait(self.refs(), num_returns=1)
            done = self.collect(ready[0])
            if done is not None:
                yield done

    def _retry_or_give_up(self, flight: _InFlight, reason: str) -> PoolResult | None:
        max_attempts = self.evaluation.max_attempts
        if flight.attempt < max_attempts:
            self._pending.appendleft((flight.task, flight.attempt + 1))
            return None
        lost = worker_lost(flight.task, self.evaluation, flight.attempt, reason)
        return PoolResult(flight.task, lost, flight.attempt)

    def run(self, tasks: Iterable[EvalTask], on_result: Callable[[PoolResult], None]) -> int:
        """Evaluate `tasks`, calling `on_result` as each finishes; returns how many."""
        self.submit(tasks)
        count = 0
        for item in self.results():
            on_result(item)
            count += 1
        return count

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors.clear()
        self._load.clear()
        self._in_flight.clear()
        self._starting.clear()
        self._where.clear()


def archive_recorder(archive: ArchiveStore, run_id: str) -> Callable[[PoolResult], None]:
    """A callback that stores each result through `Archive.record_evaluation` (idempotent per
    run, architecture, dataset, seed and budget, so a repeated delivery changes nothing)."""

    def record(item: PoolResult) -> None:
        r = item.result
        if item.task.arch_hash is None:
            raise ValueError(f"task {item.task.key!r} has no arch_hash to record under")
        archive.record_evaluation(
            run_id,
            item.task.arch_hash,
            dataset=r.dataset,
            seed=r.seed,
            budget=r.budget,
            score=r.accuracy if r.ok else None,
            loss=r.loss,
            accuracy=r.accuracy,
            epochs_done=r.epochs_done,
            duration_s=r.duration_s,
            samples_per_s=r.samples_per_s,
            worker_id=r.worker_id,
            node_id=r.node_id,
            gpu_id=r.gpu_id,
            attempt=item.attempts,
            error_class=r.error_class,
            message=r.message,
            candidate_id=item.task.candidate_id,
            deadline_s=r.deadline_s,
            recipe=r.recipe,
            reused_from=r.reused_from,
        )

    return record
