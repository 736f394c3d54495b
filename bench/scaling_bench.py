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

It reports and compares with the issue's goals; it asserts nothing.

    python bench/scaling_bench.py [--evaluators 1,2,4,8,16,32] [--duration-s 1.0]
        [--tasks-per-evaluator 4] [--cpus-per-evaluator 0.05] [--overhead-tasks 1000]
        [--overhead-evaluators 8] [--json PATH]
"""

from __future__ import annotations

import argparse
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

from cluster.pool import EvaluatorPool, Placement, PoolResult, archive_recorder  # noqa: E402
from db.archive import Archive, code_hash  # noqa: E402
from llmnas_dist.config import AdmissionConfig, EvaluationConfig  # noqa: E402

# the evaluator's own budget_key: the actor then imports nothing the real one does not
from llmnas_dist.evaluation import budget_key  # noqa: E402
from workers.evaluator import EvalTask  # noqa: E402

# This file is not an installed module: ship its classes to Ray workers by value, or a
# worker would try to import it by name and fail.
if __name__ != "__main__":
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

GOAL_EFFICIENCY = 0.95  # issue 6: at least this, up to 32 evaluators
GOAL_OVERHEAD_MS = 5.0  # issue 6: under this per candidate
DATASET = "synthetic"
DEFAULT_SIZES = (1, 2, 4, 8, 16, 32)


class SleepEvaluator:
    """Stands in for `workers.evaluator.Evaluator`: same constructor, same result keys, but
    the evaluation is a sleep of exactly `task.budget_s` seconds."""

    def __init__(
        self, evaluation: EvaluationConfig, admission: AdmissionConfig | None = None
    ) -> None:
        ctx = ray.get_runtime_context()
        self.node_id = ctx.get_node_id()
        self.worker_id = ctx.get_actor_id() or f"pid-{os.getpid()}"

    def evaluate(self, task: EvalTask) -> dict[str, Any]:
        started = time.time()
        time.sleep(task.budget_s or 0.0)
        finished = time.time()
        accuracy = (zlib.crc32(task.key.encode()) % 1000) / 1000.0  # stable per task
        return {
            "ok": True,
            "dataset": task.dataset,
            "seed": task.seed,
            "epochs": None,
            "budget_s": task.budget_s,
            "budget": budget_key(None, task.budget_s or 0.0),
            "accuracy": accuracy,
            "loss": 1.0 - accuracy,
            "epochs_done": None,
            "duration_s": finished - started,
            "samples_per_s": None,
            "params": None,
            "device": "cpu",
            "error_class": None,
            "message": None,
            "node_id": self.node_id,
            "gpu_id": None,
            "worker_id": self.worker_id,
            "pid": os.getpid(),
            "key": task.key,
            # wall-clock stamps (same machine, same clock as the driver) for the timeline
            "started_at": started,
            "finished_at": finished,
        }


SleepEvaluatorActor = ray.remote(SleepEvaluator)


@dataclass
class ScalingRow:
    evaluators: int
    tasks: int
    duration_s: float
    ideal_s: float
    makespan_s: float
    efficiency: float
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
    arrivals: list[tuple[float, dict[str, Any]]] = field(default_factory=list)

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
    # one task per idle actor: the pool sends each actor exactly one
    warm = [
        EvalTask(key=f"warm-{i}", code="", dataset=DATASET, budget_s=0.0) for i in range(evaluators)
    ]
    workers: set[str] = set()
    pool.run(warm, lambda item: workers.add(item.result["worker_id"]))
    if len(workers) != evaluators:
        raise RuntimeError(f"warm-up reached {len(workers)} of {evaluators} actors")
    return pool, time.perf_counter() - started


def timeline(
    arrivals: list[tuple[float, dict[str, Any]]], t0: float, t1: float
) -> dict[str, float]:
    """Where the makespan went, from the actors' own sleep stamps (wall clock)."""
    by_worker: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for _, r in arrivals:
        by_worker[r["worker_id"]].append((r["started_at"], r["finished_at"]))
    gaps = []
    for spans in by_worker.values():
        spans.sort()
        gaps += [nxt[0] - prev[1] for prev, nxt in pairwise(spans)]
    return {
        "mean_gap_ms": 1000 * statistics.fmean(gaps) if gaps else 0.0,
        "max_gap_ms": 1000 * max(gaps) if gaps else 0.0,
        "first_start_ms": 1000 * (min(r["started_at"] for _, r in arrivals) - t0),
        "tail_ms": 1000 * (t1 - max(r["finished_at"] for _, r in arrivals)),
        "oversleep_ms": 1000
        * statistics.fmean(r["duration_s"] - r["budget_s"] for _, r in arrivals),
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


# ---- the whole bench ---------------------------------------------------------------------


def run_bench(
    archive: Archive,
    sizes: list[int],
    duration_s: float,
    tasks_per_evaluator: int,
    cpus_per_evaluator: float,
    overhead_tasks: int,
    overhead_evaluators: int,
) -> dict[str, Any]:
    """Both measurements on a running Ray and an open archive; a JSON-ready report."""
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
    return {
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


def verdict(ok: bool) -> str:
    return "meets" if ok else "MISSES"


def format_report(report: dict[str, Any]) -> str:
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
    p.add_argument("--evaluators", default=",".join(map(str, DEFAULT_SIZES)))
    p.add_argument("--duration-s", type=float, default=1.0, help="one evaluation's sleep")
    p.add_argument("--tasks-per-evaluator", type=int, default=4)
    p.add_argument("--cpus-per-evaluator", type=float, default=0.05)
    p.add_argument("--overhead-tasks", type=int, default=1000, help="0 skips (b)")
    p.add_argument("--overhead-evaluators", type=int, default=8)
    p.add_argument("--json", type=Path, help="also write the report here")
    args = p.parse_args(argv)
    try:
        args.sizes = parse_sizes(args.evaluators)
    except ValueError as exc:
        p.error(str(exc))
    if args.duration_s <= 0 or args.tasks_per_evaluator < 1 or args.cpus_per_evaluator <= 0:
        p.error("--duration-s and --cpus-per-evaluator must be > 0, --tasks-per-evaluator >= 1")
    if args.overhead_tasks < 0 or args.overhead_evaluators < 1:
        p.error("--overhead-tasks must be >= 0 and --overhead-evaluators >= 1")
    return args


def ray_cpus(sizes: list[int], overhead_evaluators: int, cpus_per_evaluator: float) -> int:
    """Logical CPUs for Ray: enough for the largest pool's fractional requests."""
    largest = max(*sizes, overhead_evaluators)
    return max(2, math.ceil(largest * cpus_per_evaluator) + 1)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    ray.init(
        num_cpus=ray_cpus(args.sizes, args.overhead_evaluators, args.cpus_per_evaluator),
        include_dashboard=False,
        log_to_driver=False,
    )
    try:
        with temp_archive() as archive:
            report = run_bench(
                archive,
                args.sizes,
                args.duration_s,
                args.tasks_per_evaluator,
                args.cpus_per_evaluator,
                args.overhead_tasks,
                args.overhead_evaluators,
            )
    finally:
        ray.shutdown()
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
