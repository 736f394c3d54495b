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

Placement lives in `evaluator_placement`: one GPU per actor when the cluster has GPUs
(so one pinned evaluator per GPU), otherwise `cpus_per_evaluator` CPUs each.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

from llmnas_dist.config import AdmissionConfig, EvaluationConfig
from workers.evaluator import EvalTask, EvaluatorActor, worker_lost

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


@dataclass
class PoolResult:
    task: EvalTask
    result: dict[str, Any]
    attempts: int


@dataclass
class _InFlight:
    task: EvalTask
    actor: Any
    attempt: int


@dataclass
class EvaluatorPool:
    """Evaluator actors with streaming results, bounded retry and replacement."""

    evaluation: EvaluationConfig
    admission: AdmissionConfig | None = None
    placement: Placement | None = None
    actor_cls: Any = None  # a Ray actor class with evaluate(EvalTask) -> dict (default: ours)
    actors: list[Any] = field(default_factory=list)
    replaced: int = 0

    def __post_init__(self) -> None:
        self._placement = self.placement or evaluator_placement(
            self.evaluation, ray.cluster_resources()
        )
        self._load: dict[Any, int] = {}  # actor -> tasks sent to it and not yet back
        self._pending: deque[tuple[EvalTask, int]] = deque()
        self._in_flight: dict[Any, _InFlight] = {}
        self.resize(self._placement.count)

    def _new_actor(self) -> Any:
        actor_cls = self.actor_cls or EvaluatorActor
        actor = actor_cls.options(**self._placement.options()).remote(
            self.evaluation, self.admission
        )
        self.actors.append(actor)
        self._load[actor] = 0
        return actor

    def resize(self, count: int) -> None:
        """Grow or shrink to `count` actors; call between cycles (busy actors are kept)."""
        if count < 1:
            raise ValueError(f"an evaluator pool needs at least one actor, got {count}")
        while len(self.actors) < count:
            self._new_actor()
        idle = [a for a in self.actors if self._load[a] == 0]
        for actor in idle[: max(0, len(self.actors) - count)]:
            self.actors.remove(actor)
            del self._load[actor]
            ray.kill(actor, no_restart=True)
        self._dispatch()

    def submit(self, tasks: Iterable[EvalTask]) -> None:
        self._pending.extend((task, 1) for task in tasks)
        self._dispatch()

    def in_flight(self) -> dict[str, Any]:
        """Candidate key -> the actor evaluating it now."""
        return {f.task.key: f.actor for f in self._in_flight.values()}

    def _free_actor(self) -> Any | None:
        """The least loaded actor that can take one more task (first in order on ties)."""
        actor = min(self.actors, key=self._load.__getitem__, default=None)
        if actor is None or self._load[actor] >= self.evaluation.queue_depth:
            return None
        return actor

    def _dispatch(self) -> None:
        while self._pending and (actor := self._free_actor()) is not None:
            task, attempt = self._pending.popleft()
            ref = actor.evaluate.remote(task)
            self._load[actor] += 1
            self._in_flight[ref] = _InFlight(task, actor, attempt)

    def _release(self, actor: Any) -> None:
        if actor in self._load:
            self._load[actor] -= 1

    def _replace(self, dead: Any) -> None:
        if dead in self.actors:
            self.actors.remove(dead)
            del self._load[dead]
            self._new_actor()
            self.replaced += 1

    def refs(self) -> list[Any]:
        """The object refs of the evaluations running now (for a caller's own ray.wait)."""
        return list(self._in_flight)

    def busy(self) -> bool:
        return bool(self._in_flight or self._pending)

    def collect(self, ref: Any) -> PoolResult | None:
        """Take one finished ref: its result, or None when the task was queued again (its
        actor died, or raised) and will come back under a later ref."""
        flight = self._in_flight.pop(ref)
        try:
            result = ray.get(ref)
        except (ActorDiedError, ActorUnavailableError, RayActorError) as exc:
            log.warning(
                "evaluator died on %s (attempt %d): %s",
                flight.task.key,
                flight.attempt,
                type(exc).__name__,
            )
            self._replace(flight.actor)
            done = self._retry_or_give_up(flight, f"actor died ({type(exc).__name__})")
        except Exception as exc:  # noqa: BLE001 - the actor raised: infrastructure, retry
            self._release(flight.actor)
            done = self._retry_or_give_up(flight, str(exc)[:500])
        else:
            self._release(flight.actor)
            done = PoolResult(flight.task, result, flight.attempt)
        self._dispatch()
        return done

    def results(self) -> Iterator[PoolResult]:
        """Each submitted task's one result, in completion order, until none is left."""
        while self._in_flight:
            ready, _ = ray.wait(list(self._in_flight), num_returns=1)
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


def archive_recorder(archive: Any, run_id: str) -> Callable[[PoolResult], None]:
    """A callback that stores each result through `Archive.record_evaluation` (idempotent per
    run, architecture, dataset, seed and budget, so a repeated delivery changes nothing)."""

    def record(item: PoolResult) -> None:
        r = item.result
        if item.task.arch_hash is None:
            raise ValueError(f"task {item.task.key!r} has no arch_hash to record under")
        archive.record_evaluation(
            run_id,
            item.task.arch_hash,
            dataset=r["dataset"],
            seed=r["seed"],
            budget=r["budget"],
            score=r.get("accuracy") if r.get("ok") else None,
            loss=r.get("loss"),
            accuracy=r.get("accuracy"),
            epochs_done=r.get("epochs_done"),
            duration_s=r.get("duration_s"),
            samples_per_s=r.get("samples_per_s"),
            worker_id=r.get("worker_id"),
            node_id=r.get("node_id"),
            gpu_id=r.get("gpu_id"),
            attempt=item.attempts,
            error_class=r.get("error_class"),
            message=r.get("message"),
            candidate_id=item.task.candidate_id,
        )

    return record
