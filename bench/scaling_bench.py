"""Scaling benchmark (issue 6, item 7): how much of the evaluators' time the driver wastes.

Synthetic workload: `SleepEvaluator` actors stand in for the real evaluators. Each
evaluation sleeps the task's known duration (`EvalTask.budget_s`) and returns a result dict
shaped like the real evaluator's. The tasks go through the real `EvaluatorPool` (ray.wait
streaming, retries) and every result through the real `archive_recorder` into a real SQLite
archive in a temporary folder, so the driver pays exactly what it pays in a run.

(a) Orchestration efficiency at 1, 2, 4, 8, 16, 32 evaluators: every evaluator gets
    `--tasks-per-evaluator` tasks of `--duration-s` each, so the ideal makespan is
    tasks-per-evaluator x duration; efficiency = ideal / measured makespan. A fresh pool
    per size is warmed first (one zero-length task per actor): its start-up is reported
    separately and is not in the makespan. The timeline columns say where lost time went:
    `gap` is an actor's mean idle time between finishing one task and starting its next
    (the driver's turnaround), `tail` is the time from the last actor finishing to the
    driver having recorded it, `oversleep` is how much longer than asked the sleeps took
    (the OS, not the driver), and `loss/turn` is (makespan - ideal) / tasks per evaluator:
    the time lost per task, so efficiency at another duration d is about d / (d + loss).
(b) Driver overhead per candidate: `--overhead-tasks` zero-length tasks through a pool of
    `--overhead-evaluators` actors and the recorder; wall time / tasks, split into the
    archive write (time inside `record_evaluation`) and the rest (pool dispatch, ray.wait,
    ray.get, the actor round trip the driver waits on).

(c) `driver` mode: the REAL driver (`cluster.driver.Driver().run()`: real Ray, a real SQLite
    archive per size in a temporary folder, real evaluator actors proxy-training on `digits`,
    real admission and novelty) for `--cycles` short CE cycles at each evaluator count, with
    only the two LLM actors replaced by named fakes from bench/driver_stubs.py:
    `StubGenerationActor` (stands in for the GPU vLLM engine: answers each prompt with a
    programmatic mutation of its parent, after a sleep of the answer's tokens at
    `--tokens-per-s`) and `StubFinetuneActor` (keeps the adapter as it is); warm start off.
    Cycle 0 (the seed programs, `--seeds`) runs as in any run but is not measured. From the
    run's busy spans (`Archive.spans`, `llmnas_dist.analysis.timeline.cycle_use`) of cycles 1..C it
    prints ONE table with the sleep rows of (a) (same sizes) and the driver rows:

    efficiency = ideal / measured, as in (a): `ideal` is the makespan of the same evaluation
      work with evaluators that never idle, all work ready at the start: max(evaluator busy
      seconds / evaluators, longest evaluation) (in (a): turns x duration); `measured` runs
      from the first moment there was work to the last evaluation's end (in (a): from
      `pool.run()` to the last result; driver: from the cycle's first generation answer to
      its last candidate evaluation's end), summed over the cycles. So a driver row also
      loses what the sleep rows cannot: admission, unequal evaluation lengths, and waiting
      for later generation batches (the `critical path` column says when generation
      bounded the cycle).
    ready eff = ready ideal / measured, ready ideal = the same evaluations started back to back
      on the first free evaluator, each as soon as its candidate was admitted (a greedy
      schedule, so not a strict bound): generation's pace excused, what is left is the
      driver's turnaround and dispatch. Sleep rows: all ready at once, = efficiency.
    eval busy = the evaluators' mean busy share (sleep rows: over the makespan; driver rows:
      `cycle_use(...).group_share["evaluator"]`, over each cycle's spans).
    gap ms = an evaluator's idle time between finishing one task and starting its next,
      counted from when that next task was ready (sleep rows: all ready at once; driver rows:
      from the end of its candidate's admission): the driver's turnaround per task.
    first start ms = first task ready -> first evaluation started (the dispatch latency).
    loss/turn ms = (measured - ideal) / turns, turns = ceil(tasks / evaluators).
    admit ms/cand = the driver's mean admission span per generated answer (parse, checks,
      sandboxed build, novelty): driver time per candidate that no sleep row has.
    cycle s = the mean wall time of a CE cycle (archive: cycle started .. completed).

It reports and compares with the issue's goals; it asserts nothing.

    python bench/scaling_bench.py [synthetic] [--evaluators 1,2,4,8,16,32] [--duration-s 1.0]
        [--tasks-per-evaluator 4] [--cpus-per-evaluator 0.05] [--overhead-tasks 1000]
        [--overhead-evaluators 8] [--json PATH]
    python bench/scaling_bench.py driver [--sizes 1,2,4] [--cycles 2] [--candidates 8]
        [--epochs 0.3] [--seeds plain_cnn,...] [--tokens-per-s 400] [--gen-batch-size 4]
        [... and the options of (a), (b) for the sleep rows]
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import zlib
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import ray
import ray.cloudpickle

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import driver_stubs
from bench.driver_stubs import (
    DEFAULT_TOKENS_PER_S,
    StubFinetuneActor,
    StubGenerationActor,
)
from cluster.driver import Driver
from cluster.factory import Actors
from cluster.pool import EvaluatorPool, Placement, PoolResult, archive_recorder
from db.archive import Archive
from llmnas_dist.analysis.timeline import busy_seconds, cycle_use
from llmnas_dist.config import (
    AdmissionConfig,
    Config,
    EvaluationConfig,
    build_config,
)
from llmnas_dist.evaluation.evaluate import EvalRecord
from llmnas_dist.seeds import load_seeds
from llmnas_dist.spans import Span, SpanKind, Where

# the evaluator's own budget_key: the actor then imports nothing the real one does not
from llmnas_dist.vocab import CandidateStatus, RunStatus, budget_key, code_hash
from workers.evaluator import EvalTask

# This file and bench/ are not installed modules: ship their classes to Ray workers by
# value, or a worker would try to import them by name and fail.
if __name__ != "__main__":
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
ray.cloudpickle.register_pickle_by_value(driver_stubs)

GOAL_EFFICIENCY = 0.95  # issue 6: at least this, up to 32 evaluators
GOAL_OVERHEAD_MS = 5.0  # issue 6: under this per candidate
DATASET = "synthetic"
DEFAULT_SIZES = (1, 2, 4, 8, 16, 32)
DRIVER_SIZES = (1, 2, 4)  # driver mode: real trainings on this machine's cores
# shipped seeds the driver mode starts from: short proxies on digits (0.2-1.3 s at 0.3
# epochs on one core), so a cycle is minutes, not tens of minutes
DRIVER_SEEDS = ("densenet_small", "plain_cnn", "resnet_basic", "se_resnet")
STUB_ACTOR_CPUS = 0.05  # logical CPUs of each stub actor (they sleep; Ray only counts)


class SleepEvaluator:
    """Stands in for `workers.evaluator.Evaluator`: same constructor, same result type
    (`EvalRecord`), but the evaluation is a sleep of exactly `task.budget_s` seconds."""

    def __init__(
        self, evaluation: EvaluationConfig, admission: AdmissionConfig | None = None
    ) -> None:
        ctx = ray.get_runtime_context()
        self.node_id = ctx.get_node_id()
        self.worker_id = ctx.get_actor_id() or f"pid-{os.getpid()}"

    def where(self) -> Where:
        return Where(self.worker_id, self.node_id, (), os.getpid())

    def evaluate(self, task: EvalTask) -> EvalRecord:
        started = time.time()
        time.sleep(task.budget_s or 0.0)
        finished = time.time()
        accuracy = (zlib.crc32(task.key.encode()) % 1000) / 1000.0  # stable per task
        return EvalRecord(
            ok=True,
            dataset=task.dataset,
            seed=task.seed,
            epochs=None,
            budget_s=task.budget_s or 0.0,  # its budget key: budget_s=<seconds>
            accuracy=accuracy,
            loss=1.0 - accuracy,
            duration_s=finished - started,
            device="cpu",
            key=task.key,
            where=self.where(),
            # wall-clock stamps (same machine, same clock as the driver) for the timeline
            started=started,
            ended=finished,
        )


SleepEvaluatorActor = ray.remote(SleepEvaluator)


@dataclass
class ScalingRow:
    evaluators: int
    tasks: int
    duration_s: float
    ideal_s: float
    makespan_s: float
    efficiency: float
    busy_share: float  # the evaluators' mean busy share of the makespan (their sleeps)
    startup_s: float  # pool construction + one warm round trip per actor
    recorded: int  # evaluation rows in the archive for this size's run
    deliveries: int  # results the driver received (must equal tasks)
    mean_gap_ms: float  # an actor's idle time between two of its tasks
    max_gap_ms: float
    first_start_ms: float  # run() called -> first sleep begins
    tail_ms: float  # last sleep ends -> run() returns (last result recorded)
    oversleep_ms: float  # mean sleep beyond the asked duration (CPU contention, not driver)
    loss_per_turn_ms: float  # (makespan - ideal) / tasks per evaluator
    archive_ms_per_task: float
    run_id: str


@dataclass
class OverheadRow:
    evaluators: int
    tasks: int
    wall_s: float
    total_ms: float  # per candidate
    archive_ms: float  # per candidate, inside record_evaluation
    pool_ms: float  # per candidate, the rest: dispatch, ray.wait/get, round trip
    recorded: int
    deliveries: int
    startup_s: float
    run_id: str


@dataclass
class TimedRecorder:
    """The real archive recorder, timed, with the arrival time of every result."""

    archive: Archive
    run_id: str
    archive_s: float = 0.0
    arrivals: list[tuple[float, EvalRecord]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._record = archive_recorder(self.archive, self.run_id)

    def __call__(self, item: PoolResult) -> None:
        arrived = time.time()
        self._record(item)
        self.archive_s += time.time() - arrived
        self.arrivals.append((arrived, item.result))


# ---- archive and tasks -------------------------------------------------------------------


@contextmanager
def temp_archive() -> Iterator[Archive]:
    """A fresh SQLite archive (WAL, as in a run) in a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="llmnas-scaling-") as tmp:
        archive = Archive.from_url(f"sqlite:///{Path(tmp) / 'archive.db'}")
        try:
            yield archive
        finally:
            archive.close()


def synthetic_architectures(archive: Archive, count: int) -> list[str]:
    """`count` distinct programs in the archive (the recorder needs an arch_hash per task)."""
    hashes = []
    for i in range(count):
        code = f"# synthetic architecture {i}\n"
        archive.add_architecture(code)
        hashes.append(code_hash(code))
    return hashes


def new_run(archive: Archive, run_id: str, duration_s: float) -> str:
    archive.create_run({}, run_id=run_id, dataset=DATASET, budget=budget_key(None, duration_s))
    return run_id


def sleep_tasks(hashes: list[str], duration_s: float, prefix: str) -> list[EvalTask]:
    return [
        EvalTask(
            key=f"{prefix}-{i}",
            code="",
            dataset=DATASET,
            seed=0,
            budget_s=duration_s,
            arch_hash=arch,
        )
        for i, arch in enumerate(hashes)
    ]


# ---- pools -------------------------------------------------------------------------------


def warm_pool(evaluators: int, cpus_per_evaluator: float) -> tuple[EvaluatorPool, float]:
    """A pool of sleep actors that has answered once from every actor; and how long that
    took (actor processes start lazily, so construction alone would hide the start-up)."""
    started = time.perf_counter()
    pool = EvaluatorPool(
        EvaluationConfig(cpus_per_evaluator=cpus_per_evaluator),
        placement=Placement(evaluators, 0.0, cpus_per_evaluator),
        actor_cls=SleepEvaluatorActor,
    )
    pool.wait_ready()  # every actor said where it runs: the pool hands tasks to ready ones
    # one task per idle actor: the pool sends each actor exactly one
    warm = [
        EvalTask(key=f"warm-{i}", code="", dataset=DATASET, budget_s=0.0) for i in range(evaluators)
    ]
    workers: set[str] = set()
    pool.run(warm, lambda item: workers.add(item.result.worker_id or ""))
    if len(workers) != evaluators:
        raise RuntimeError(f"warm-up reached {len(workers)} of {evaluators} actors")
    return pool, time.perf_counter() - started


def timeline(arrivals: list[tuple[float, EvalRecord]], t0: float, t1: float) -> dict[str, float]:
    """Where the makespan went, from the actors' own sleep stamps (wall clock)."""
    by_worker: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for _, r in arrivals:
        by_worker[r.worker_id or ""].append((r.started or 0.0, r.ended or 0.0))
    gaps = []
    for spans in by_worker.values():
        spans.sort()
        gaps += [nxt[0] - prev[1] for prev, nxt in pairwise(spans)]
    return {
        "mean_gap_ms": 1000 * statistics.fmean(gaps) if gaps else 0.0,
        "max_gap_ms": 1000 * max(gaps) if gaps else 0.0,
        "first_start_ms": 1000 * (min(r.started or 0.0 for _, r in arrivals) - t0),
        "tail_ms": 1000 * (t1 - max(r.ended or 0.0 for _, r in arrivals)),
        "oversleep_ms": 1000
        * statistics.fmean((r.duration_s or 0.0) - (r.budget_s or 0.0) for _, r in arrivals),
    }


def measure_scaling(
    archive: Archive,
    hashes: list[str],
    evaluators: int,
    duration_s: float,
    tasks_per_evaluator: int,
    cpus_per_evaluator: float,
) -> ScalingRow:
    """Efficiency of one pool size: ideal makespan / measured makespan."""
    n_tasks = evaluators * tasks_per_evaluator
    if len(hashes) < n_tasks:
        raise ValueError(f"{n_tasks} tasks need as many architectures, got {len(hashes)}")
    run_id = new_run(archive, f"scale-n{evaluators}", duration_s)
    tasks = sleep_tasks(hashes[:n_tasks], duration_s, run_id)
    pool, startup_s = warm_pool(evaluators, cpus_per_evaluator)
    recorder = TimedRecorder(archive, run_id)
    try:
        t0_wall, t0 = time.time(), time.perf_counter()
        deliveries = pool.run(tasks, recorder)
        makespan, t1_wall = time.perf_counter() - t0, time.time()
    finally:
        pool.shutdown()
    turns = math.ceil(n_tasks / evaluators)
    ideal = turns * duration_s
    return ScalingRow(
        evaluators=evaluators,
        tasks=n_tasks,
        duration_s=duration_s,
        ideal_s=ideal,
        makespan_s=makespan,
        efficiency=ideal / makespan,
        busy_share=sum(r.duration_s or 0.0 for _, r in recorder.arrivals) / (evaluators * makespan),
        loss_per_turn_ms=1000 * (makespan - ideal) / turns,
        startup_s=startup_s,
        recorded=len(archive.evaluations(run_id)),
        deliveries=deliveries,
        archive_ms_per_task=1000 * recorder.archive_s / n_tasks,
        run_id=run_id,
        **timeline(recorder.arrivals, t0_wall, t1_wall),
    )


def measure_overhead(
    archive: Archive, hashes: list[str], evaluators: int, cpus_per_evaluator: float
) -> OverheadRow:
    """Driver cost per candidate: zero-length evaluations, so the driver is the bottleneck."""
    run_id = new_run(archive, "overhead", 0.0)
    tasks = sleep_tasks(hashes, 0.0, run_id)
    pool, startup_s = warm_pool(evaluators, cpus_per_evaluator)
    recorder = TimedRecorder(archive, run_id)
    try:
        t0 = time.perf_counter()
        deliveries = pool.run(tasks, recorder)
        wall = time.perf_counter() - t0
    finally:
        pool.shutdown()
    n = len(tasks)
    return OverheadRow(
        evaluators=evaluators,
        tasks=n,
        wall_s=wall,
        total_ms=1000 * wall / n,
        archive_ms=1000 * recorder.archive_s / n,
        pool_ms=1000 * (wall - recorder.archive_s) / n,
        recorded=len(archive.evaluations(run_id)),
        deliveries=deliveries,
        startup_s=startup_s,
        run_id=run_id,
    )


# ---- (c) the real driver -----------------------------------------------------------------


@dataclass(frozen=True)
class DriverSettings:
    """The small run each evaluator count gets in driver mode."""

    cycles: int = 2
    candidates: int = 8  # ce.candidates_per_cycle
    epochs: float = 0.3  # evaluation.epochs of the proxy on digits
    seeds: tuple[str, ...] = DRIVER_SEEDS  # shipped seed programs of cycle 0
    tokens_per_s: float = DEFAULT_TOKENS_PER_S  # the stub engine's decode rate per sequence
    batch_size: int = 4  # generation.batch_size: prompts per generation call
    cpus_per_evaluator: float = 0.05


@dataclass
class DriverRow:
    evaluators: int
    cycles: int  # CE cycles measured (cycle 0, the seeds, is not)
    candidates: int  # answers recorded in those cycles (retries included)
    admitted: int
    tasks: int  # candidate evaluation attempts (evaluate spans)
    ideal_s: float  # sum over cycles of max(evaluator work / evaluators, longest evaluation)
    measured_s: float  # sum over cycles of first answer -> last candidate evaluation ends
    efficiency: float | None  # ideal / measured (None: nothing was evaluated)
    ready_efficiency: float | None  # ready_ideal / measured: generation's pace excused
    ready_ideal_s: float  # sum over cycles: back-to-back from each task's admission
    busy_share: float  # evaluators' busy share (timeline group_share), weighted by cycle span
    driver_share: float  # the driver's (admission spans) busy share
    mean_gap_ms: float  # evaluator idle between two tasks, from the next one's admission
    max_gap_ms: float
    first_start_ms: float  # first admission ends -> first evaluation starts (mean of cycles)
    loss_per_turn_ms: float  # (measured - ideal) / turns
    admit_ms: float  # mean admission span per answer
    cycle_s: float  # mean CE cycle wall time (archive: started .. completed)
    cycle_seconds: list[float]
    critical_path: list[str | None]  # per cycle, timeline.cycle_use
    keep_pace: list[int | None]  # per cycle: evaluators that would have kept pace
    startup_s: float  # actors started and ready (not in any cycle)
    wall_s: float  # Driver.run(), cycle 0 included
    run_id: str
    archive_url: str
    per_cycle: list[dict[str, Any]] = field(default_factory=list)


def driver_config(folder: Path, evaluators: int, s: DriverSettings) -> Config:
    """A small run on digits, its archive and run folder under `folder`."""
    return build_config(
        {
            "ce": {
                "cycles": s.cycles,
                "candidates_per_cycle": s.candidates,
                "dataset": "digits",
                "seeds": str(folder / "seeds"),
            },
            "generation": {
                "warm_start": False,  # the stub fine-tuner has nothing to warm-start
                "batch_size": s.batch_size,
                "delta_fraction": 0.5,  # as the embedded default config
            },
            "evaluation": {
                "epochs": s.epochs,
                "evaluators": evaluators,
                "cpus_per_evaluator": s.cpus_per_evaluator,
                "noise_sample": 0,
                "reference_sample": 0,
            },
            "archive": {"url": f"sqlite:///{folder / 'archive.db'}"},
            "cluster": {"run_dir": str(folder / "runs")},
        },
        "(scaling bench, driver mode)",
    )


def write_seeds(folder: Path, names: tuple[str, ...]) -> None:
    shipped = load_seeds()
    unknown = sorted(set(names) - set(shipped))
    if unknown:
        raise ValueError(f"unknown seed programs {unknown}; shipped: {', '.join(shipped)}")
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / f"{name}.py").write_text(shipped[name])


def start_stub_actors(cfg: Config, evaluators: int, tokens_per_s: float) -> Actors:
    """The run's actors as `cluster.factory.start_actors` makes them, except that the
    generation engine and the fine-tuner are the named fakes of bench/driver_stubs.py."""
    generator = StubGenerationActor.options(num_cpus=STUB_ACTOR_CPUS, max_restarts=0).remote(
        cfg.generation, tokens_per_s
    )
    finetuner = StubFinetuneActor.options(num_cpus=STUB_ACTOR_CPUS, max_restarts=0).remote(
        cfg.generation.model, cfg.finetune
    )
    pool = EvaluatorPool(
        cfg.evaluation,
        cfg.admission,
        placement=Placement(evaluators, 0.0, cfg.evaluation.cpus_per_evaluator),
    )
    return Actors([generator], finetuner, pool)


def candidate_of(key: str | None) -> str:
    """The candidate id of an evaluation span's key (`<candidate>#<seed>`)."""
    return (key or "").rsplit("#", 1)[0]


def cycle_metrics(spans: list[Span], evaluators: int) -> dict[str, Any]:
    """The efficiency of one cycle's evaluations and the driver's turnaround, from spans
    (definitions: the module docstring)."""
    gen = [s for s in spans if s.kind == SpanKind.GENERATE.value]
    admits = [s for s in spans if s.kind == SpanKind.ADMIT.value]
    evals = [s for s in spans if s.kind == SpanKind.EVALUATE.value]
    out: dict[str, Any] = {
        "tasks": len(evals),
        "admits": [s.seconds for s in admits],
        "gaps": [],
        "ideal_s": None,
        "ready_ideal_s": None,
        "measured_s": None,
        "first_start_s": None,
        "turns": 0,
    }
    if not gen or not evals:
        return out
    ready = {s.key: s.ended for s in admits}  # candidate id -> its admission's end
    by_actor: dict[str, list[Span]] = defaultdict(list)
    for s in evals:
        by_actor[s.actor].append(s)
    work = sum(
        busy_seconds([(s.started, s.ended) for s in v], -math.inf, math.inf)
        for v in by_actor.values()
    )
    for mine in by_actor.values():
        mine.sort(key=lambda s: s.started)
        for prev, nxt in pairwise(mine):
            since = max(prev.ended, ready.get(candidate_of(nxt.key), prev.ended))
            out["gaps"].append(max(0.0, nxt.started - since))
    first_ready = min(ready.get(candidate_of(s.key), s.started) for s in evals)
    t0 = min(s.ended for s in gen)
    # the same evaluations, each started on the first free evaluator as soon as it was
    # admitted, back to back: what a driver costing nothing between tasks would reach
    jobs = sorted((ready.get(candidate_of(s.key), s.started), s.seconds) for s in evals)
    free = [t0] * evaluators
    for ready_at, seconds in jobs:
        heapq.heappush(free, max(heapq.heappop(free), ready_at) + seconds)
    out.update(
        ideal_s=max(work / evaluators, max(s.seconds for s in evals)),
        ready_ideal_s=max(free) - t0,
        measured_s=max(s.ended for s in evals) - t0,
        first_start_s=max(0.0, min(s.started for s in evals) - first_ready),
        turns=math.ceil(len(evals) / evaluators),
    )
    return out


def driver_row(
    archive: Archive, run_id: str, evaluators: int, startup_s: float, wall_s: float
) -> DriverRow:
    """One evaluator count's row from its run's archive (cycles 1..C)."""
    cycles = [c for c in archive.cycles(run_id) if c.t >= 1]
    cands = [c for c in archive.candidates(run_id) if c.cycle >= 1]
    per_cycle, uses, metrics = [], [], []
    for c in cycles:
        spans = archive.spans(run_id, c.t)
        use = cycle_use(c.t, spans, evaluators)
        m = cycle_metrics(spans, evaluators)
        seconds = (c.finished_at - c.started_at).total_seconds() if c.finished_at else math.nan
        uses.append(use)
        metrics.append(m)
        per_cycle.append(
            {
                "cycle": c.t,
                "wall_s": seconds,
                "span_s": use.seconds if use else None,
                "group_share": use.group_share if use else {},
                "critical_path": use.critical_path if use else None,
                "generation_s": use.generation_s if use else None,
                "tail_s": use.tail_s if use else None,
                "keep_pace": use.keep_pace if use else None,
                "tasks": m["tasks"],
                "ideal_s": m["ideal_s"],
                "ready_ideal_s": m["ready_ideal_s"],
                "measured_s": m["measured_s"],
            }
        )
    timed = [m for m in metrics if m["measured_s"]]
    ideal = sum(m["ideal_s"] for m in timed)
    measured = sum(m["measured_s"] for m in timed)
    ready = sum(m["ready_ideal_s"] for m in timed)
    turns = sum(m["turns"] for m in timed)
    gaps = [g for m in metrics for g in m["gaps"]]
    admits = [a for m in metrics for a in m["admits"]]
    span_s = sum(u.seconds for u in uses if u)

    def share(group: str) -> float:
        return sum(u.group_share.get(group, 0.0) * u.seconds for u in uses if u) / span_s

    return DriverRow(
        evaluators=evaluators,
        cycles=len(cycles),
        candidates=len(cands),
        admitted=sum(c.status is not CandidateStatus.REJECTED for c in cands),
        tasks=sum(m["tasks"] for m in metrics),
        ideal_s=ideal,
        measured_s=measured,
        efficiency=ideal / measured if measured > 0 else None,
        ready_efficiency=ready / measured if measured > 0 else None,
        ready_ideal_s=ready,
        busy_share=share("evaluator") if span_s > 0 else 0.0,
        driver_share=share("driver") if span_s > 0 else 0.0,
        mean_gap_ms=1000 * statistics.fmean(gaps) if gaps else 0.0,
        max_gap_ms=1000 * max(gaps) if gaps else 0.0,
        first_start_ms=1000 * statistics.fmean(m["first_start_s"] for m in timed) if timed else 0.0,
        loss_per_turn_ms=1000 * (measured - ideal) / turns if turns else 0.0,
        admit_ms=1000 * statistics.fmean(admits) if admits else 0.0,
        cycle_s=statistics.fmean(p["wall_s"] for p in per_cycle) if per_cycle else 0.0,
        cycle_seconds=[p["wall_s"] for p in per_cycle],
        critical_path=[p["critical_path"] for p in per_cycle],
        keep_pace=[p["keep_pace"] for p in per_cycle],
        startup_s=startup_s,
        wall_s=wall_s,
        run_id=run_id,
        archive_url=archive.safe_url,
        per_cycle=per_cycle,
    )


def measure_driver(root: Path, evaluators: int, s: DriverSettings) -> DriverRow:
    """One small real run with `evaluators` evaluators, in its own archive under `root`
    (kept: the caller owns `root`). Needs a running Ray."""
    run_id = f"driver-n{evaluators}"
    folder = root / run_id
    write_seeds(folder / "seeds", s.seeds)
    cfg = driver_config(folder, evaluators, s)
    archive = Archive(cfg.archive)
    try:
        archive.create_run(cfg, run_id=run_id)
        started = time.perf_counter()
        actors = start_stub_actors(cfg, evaluators, s.tokens_per_s)
        status = RunStatus.FAILED
        try:
            actors.pool.wait_ready()
            ray.get([g.where.remote() for g in actors.generators])
            ray.get(actors.finetuner.where.remote())
            startup_s = time.perf_counter() - started
            # the driver's progress and cycle lines go to stderr: stdout keeps the table
            with contextlib.redirect_stdout(sys.stderr):
                t0 = time.perf_counter()
                Driver(cfg, archive, run_id, actors).run()
                wall_s = time.perf_counter() - t0
            status = RunStatus.COMPLETED
        finally:
            archive.finish_run(run_id, status)
            actors.shutdown()
        return driver_row(archive, run_id, evaluators, startup_s, wall_s)
    finally:
        archive.close()


# ---- the whole bench ---------------------------------------------------------------------


def run_bench(
    archive: Archive,
    sizes: list[int],
    duration_s: float,
    tasks_per_evaluator: int,
    cpus_per_evaluator: float,
    overhead_tasks: int,
    overhead_evaluators: int,
    *,
    driver: DriverSettings | None = None,
    driver_root: Path | None = None,
) -> dict[str, Any]:
    """The measurements on a running Ray and an open archive; a JSON-ready report. With
    `driver` settings also (c), one real run per size, its archives under `driver_root`."""
    hashes = synthetic_architectures(archive, max(max(sizes) * tasks_per_evaluator, overhead_tasks))
    scaling = [
        measure_scaling(archive, hashes, n, duration_s, tasks_per_evaluator, cpus_per_evaluator)
        for n in sizes
    ]
    overhead = (
        measure_overhead(archive, hashes[:overhead_tasks], overhead_evaluators, cpus_per_evaluator)
        if overhead_tasks
        else None
    )
    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "ray": ray.__version__,
            "archive": "sqlite (WAL, temp dir)",
        },
        "settings": {
            "sizes": sizes,
            "duration_s": duration_s,
            "tasks_per_evaluator": tasks_per_evaluator,
            "cpus_per_evaluator": cpus_per_evaluator,
            "overhead_tasks": overhead_tasks,
            "overhead_evaluators": overhead_evaluators,
        },
        "goals": {"efficiency_min": GOAL_EFFICIENCY, "overhead_ms_max": GOAL_OVERHEAD_MS},
        "scaling": [asdict(row) for row in scaling],
        "overhead": asdict(overhead) if overhead else None,
    }
    if driver is not None:
        if driver_root is None:
            raise ValueError("driver mode needs a folder for its archives (driver_root)")
        rows = [measure_driver(driver_root, n, driver) for n in sizes]
        report["driver"] = {"settings": asdict(driver), "rows": [asdict(r) for r in rows]}
    return report


def verdict(ok: bool) -> str:
    return "meets" if ok else "MISSES"


def format_report(report: dict[str, Any]) -> str:
    """The scaling table ((a), or (a) beside (c) in driver mode), then (b)."""
    lines = side_by_side(report) if report.get("driver") else synthetic_table(report)
    o = report["overhead"]
    if o:
        lines += [
            "",
            f"driver overhead per candidate ({o['tasks']} zero-length tasks, "
            f"{o['evaluators']} evaluators; goal < {GOAL_OVERHEAD_MS} ms)",
            "",
            "| total ms | goal | archive write ms | pool (dispatch, wait, get) ms | wall s |",
            "|---:|---|---:|---:|---:|",
            f"| {o['total_ms']:.2f} | {verdict(o['total_ms'] < GOAL_OVERHEAD_MS)} "
            f"| {o['archive_ms']:.2f} | {o['pool_ms']:.2f} | {o['wall_s']:.2f} |",
        ]
    return "\n".join(lines)


def synthetic_table(report: dict[str, Any]) -> list[str]:
    s = report["settings"]
    lines = [
        f"orchestration efficiency ({s['tasks_per_evaluator']} tasks x {s['duration_s']:g} s "
        f"per evaluator; goal >= {GOAL_EFFICIENCY})",
        "",
        "| evaluators | tasks | ideal s | makespan s | efficiency | goal | start-up s "
        "| gap ms (mean/max) | first start ms | tail ms | oversleep ms | loss/turn ms "
        "| archive ms/task |",
        "|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["scaling"]:
        lines.append(
            f"| {r['evaluators']} | {r['tasks']} | {r['ideal_s']:.2f} | {r['makespan_s']:.3f} "
            f"| {r['efficiency']:.3f} | {verdict(r['efficiency'] >= GOAL_EFFICIENCY)} "
            f"| {r['startup_s']:.2f} | {r['mean_gap_ms']:.1f} / {r['max_gap_ms']:.1f} "
            f"| {r['first_start_ms']:.1f} | {r['tail_ms']:.1f} | {r['oversleep_ms']:.1f} "
            f"| {r['loss_per_turn_ms']:.1f} | {r['archive_ms_per_task']:.2f} |"
        )
    return lines


def side_by_side(report: dict[str, Any]) -> list[str]:
    """ONE table: the sleep rows of (a) and the real-driver rows of (c), by evaluator count
    (the columns are defined in the module docstring; "-" where a row has no such thing)."""
    s, d = report["settings"], report["driver"]["settings"]
    paths = {"evaluation-bound": "eval", "generation-bound": "gen", None: "-"}
    rows = []
    for r in report["scaling"]:
        rows.append(
            (
                r["evaluators"],
                0,
                f"| sleep {r['duration_s']:g} s | {r['evaluators']} | {r['tasks']} "
                f"| {r['ideal_s']:.2f} | {r['makespan_s']:.2f} | {r['efficiency']:.3f} "
                f"| {verdict(r['efficiency'] >= GOAL_EFFICIENCY)} | {r['efficiency']:.3f} "
                f"| {r['busy_share']:.0%} "
                f"| {r['mean_gap_ms']:.1f} / {r['max_gap_ms']:.1f} | {r['first_start_ms']:.1f} "
                f"| {r['loss_per_turn_ms']:.1f} | - | - | - |",
            )
        )
    for r in report["driver"]["rows"]:
        eff, ready = r["efficiency"], r["ready_efficiency"]
        rows.append(
            (
                r["evaluators"],
                1,
                f"| driver | {r['evaluators']} | {r['tasks']} | {r['ideal_s']:.2f} "
                f"| {r['measured_s']:.2f} | {'-' if eff is None else f'{eff:.3f}'} "
                f"| {verdict(eff is not None and eff >= GOAL_EFFICIENCY)} "
                f"| {'-' if ready is None else f'{ready:.3f}'} "
                f"| {r['busy_share']:.0%} | {r['mean_gap_ms']:.1f} / {r['max_gap_ms']:.1f} "
                f"| {r['first_start_ms']:.1f} | {r['loss_per_turn_ms']:.1f} "
                f"| {r['admit_ms']:.1f} | {r['cycle_s']:.1f} "
                f"| {'/'.join(paths.get(p, str(p)) for p in r['critical_path']) or '-'} |",
            )
        )
    return [
        f"evaluator efficiency, sleep rows beside real-driver rows (goal >= {GOAL_EFFICIENCY})",
        f"  sleep: {s['tasks_per_evaluator']} tasks x {s['duration_s']:g} s per evaluator "
        "(SleepEvaluator, real pool and archive)",
        f"  driver: real Driver, evaluators and admission; {d['cycles']} CE cycle(s) x "
        f"{d['candidates']} candidates, digits at {d['epochs']:g} epochs, seeds "
        f"{','.join(d['seeds'])}; FAKE LLM: StubGenerationActor at {d['tokens_per_s']:g} "
        f"tokens/s, {d['batch_size']} prompts per call, StubFinetuneActor (adapter unchanged)",
        "  efficiency = ideal / measured; ideal = max(work / evaluators, longest task); "
        "measured = first task ready (driver: first answer) -> last task ends",
        "  ready eff = the same with each task ready only from its admission (waiting for "
        "generation excused; sleep rows: all ready at once, so = efficiency)",
        "",
        "| rows | evaluators | tasks | ideal s | measured s | efficiency | goal | ready eff "
        "| eval busy "
        "| gap ms (mean/max) | first start ms | loss/turn ms | admit ms/cand | cycle s "
        "| critical path |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
        *(line for _, _, line in sorted(rows, key=lambda x: (x[0], x[1]))),
    ]


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--evaluators takes comma-separated integers, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise ValueError(f"--evaluators needs counts of at least 1, got {text!r}")
    return sizes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "mode",
        nargs="?",
        choices=("synthetic", "driver"),
        default="synthetic",
        help="synthetic (default): (a) and (b) with sleep evaluators; driver: also (c), the "
        "real driver with fake LLM actors, in one table with the sleep rows",
    )
    p.add_argument(
        "--evaluators",
        "--sizes",
        dest="evaluators",
        help="evaluator counts, comma-separated (default: "
        f"{','.join(map(str, DEFAULT_SIZES))}; driver mode {','.join(map(str, DRIVER_SIZES))})",
    )
    a = p.add_argument_group("(a), (b): sleep evaluators")
    a.add_argument("--duration-s", type=float, default=1.0, help="one evaluation's sleep")
    a.add_argument("--tasks-per-evaluator", type=int, default=4)
    a.add_argument(
        "--cpus-per-evaluator",
        type=float,
        default=0.05,
        help="logical CPUs per evaluator (sleep and driver rows)",
    )
    a.add_argument("--overhead-tasks", type=int, default=1000, help="0 skips (b)")
    a.add_argument("--overhead-evaluators", type=int, default=8)
    d = p.add_argument_group("(c), driver mode: the real driver, fake LLM actors")
    d.add_argument("--cycles", type=int, default=2, help="CE cycles per evaluator count")
    d.add_argument("--candidates", type=int, default=8, help="ce.candidates_per_cycle")
    d.add_argument("--epochs", type=float, default=0.3, help="proxy epochs on digits")
    d.add_argument(
        "--seeds",
        default=",".join(DRIVER_SEEDS),
        help="shipped seed programs of cycle 0, comma-separated",
    )
    d.add_argument(
        "--tokens-per-s",
        type=float,
        default=DEFAULT_TOKENS_PER_S,
        help="the stub engine's decode rate per sequence (a call sleeps its longest "
        "answer's tokens at this rate)",
    )
    d.add_argument(
        "--gen-batch-size", type=int, default=4, help="generation.batch_size: prompts per call"
    )
    p.add_argument("--json", type=Path, help="also write the report here")
    args = p.parse_args(argv)
    default = DRIVER_SIZES if args.mode == "driver" else DEFAULT_SIZES
    try:
        args.sizes = parse_sizes(args.evaluators or ",".join(map(str, default)))
    except ValueError as exc:
        p.error(str(exc))
    if args.duration_s <= 0 or args.tasks_per_evaluator < 1 or args.cpus_per_evaluator <= 0:
        p.error("--duration-s and --cpus-per-evaluator must be > 0, --tasks-per-evaluator >= 1")
    if args.overhead_tasks < 0 or args.overhead_evaluators < 1:
        p.error("--overhead-tasks must be >= 0 and --overhead-evaluators >= 1")
    if args.cycles < 1 or args.candidates < 1 or args.gen_batch_size < 1:
        p.error("--cycles, --candidates and --gen-batch-size must be >= 1")
    if args.epochs <= 0 or args.tokens_per_s <= 0:
        p.error("--epochs and --tokens-per-s must be > 0")
    args.seed_names = tuple(n.strip() for n in args.seeds.split(",") if n.strip())
    unknown = sorted(set(args.seed_names) - set(load_seeds()))
    if not args.seed_names or unknown:
        p.error(f"--seeds: unknown or no seed programs {unknown}; shipped: {sorted(load_seeds())}")
    return args


def ray_cpus(
    sizes: list[int], overhead_evaluators: int, cpus_per_evaluator: float, stubs: int = 0
) -> int:
    """Logical CPUs for Ray: enough for the largest pool's fractional requests (and the
    driver mode's stub actors)."""
    largest = max(*sizes, overhead_evaluators)
    return max(2, math.ceil(largest * cpus_per_evaluator + stubs * STUB_ACTOR_CPUS) + 1)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    driver = (
        DriverSettings(
            cycles=args.cycles,
            candidates=args.candidates,
            epochs=args.epochs,
            seeds=args.seed_names,
            tokens_per_s=args.tokens_per_s,
            batch_size=args.gen_batch_size,
            cpus_per_evaluator=args.cpus_per_evaluator,
        )
        if args.mode == "driver"
        else None
    )
    ray.init(
        num_cpus=ray_cpus(
            args.sizes, args.overhead_evaluators, args.cpus_per_evaluator, 2 if driver else 0
        ),
        include_dashboard=False,
        log_to_driver=False,
    )
    try:
        with (
            temp_archive() as archive,
            tempfile.TemporaryDirectory(prefix="llmnas-scaling-driver-") as root,
        ):
            report = run_bench(
                archive,
                args.sizes,
                args.duration_s,
                args.tasks_per_evaluator,
                args.cpus_per_evaluator,
                args.overhead_tasks,
                args.overhead_evaluators,
                driver=driver,
                driver_root=Path(root),
            )
    finally:
        ray.shutdown()
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
