"""The GPU cluster's layout on a real two-node Ray cluster with logical GPUs, and a node
lost mid-cycle.

Ray assigns GPU ids from what a node declares (`ray start --num-gpus N`), so a CPU machine
can host the GPU layout of deploy/: the head is the inference node (GPUs tagged
`llmnas_inference` for the generation actor and the fine-tuner, plus one evaluator GPU),
the worker an evaluator node (two GPUs tagged `llmnas_evaluator`). `ray job submit` runs
`llmnas run` with `cluster.logical_gpus` on (the actors compute on the CPU and say so).
While the worker's evaluators hold cycle 0's evaluations, the worker node's processes are
killed by pid; the run must retry them on the head's evaluator, record each candidate
once, finish, and say which attempts died with the node.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from raylets import BIN, free_port, submit_job, two_raylets

from db.archive import Archive
from llmnas_dist.generation.models import cache_root
from llmnas_dist.vocab import CandidateStatus, RunStatus

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.timeout(1200),
]

RUN = "gpu-layout"
SEEDS = 5  # cycle 0's programs: enough that the worker's evaluators hold some when it dies
CONFIG = {
    "ce": {
        "cycles": 1,
        "candidates_per_cycle": 2,
        "rho": 0.5,
        "dataset": "digits",
        "seed_sample": SEEDS,
    },
    "generation": {
        "max_new_tokens": 24,
        "max_model_len": 2048,
        "warm_start": False,
        "batch_size": 2,
        "max_retries": 0,
        "tensor_parallel_size": 1,
    },
    # a fixed training time: long enough that the node dies while evaluations run
    # queue_depth 1: each ready evaluator takes one of the 5 seeds, so the worker's second
    # evaluator gets one even when it is ready last
    "evaluation": {"epochs": None, "budget_s": 20.0, "cpus_per_evaluator": 1.0, "queue_depth": 1},
    "cluster": {"logical_gpus": True, "finetune_num_gpus": 1.0},
}


def ray_cli(env: dict[str, str], *args: str) -> Any:
    done = subprocess.run(
        [str(BIN / "ray"), *args], env=env, capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise RuntimeError(f"ray {' '.join(args)}: {done.stderr[-2000:]}")
    return done.stdout


@pytest.fixture
def gpu_cluster() -> Iterator[tuple[dict[str, str], int]]:
    """Head: 3 logical GPUs (2 inference, 1 evaluator); worker: 2 evaluator GPUs. Yields
    the client environment and the worker raylet's node-manager port (to find its pid)."""
    worker_port = free_port()
    head = [
        "--num-cpus=4",
        "--num-gpus=3",
        '--resources={"llmnas_inference": 2, "llmnas_evaluator": 1}',
    ]
    worker = [
        "--num-cpus=4",
        "--num-gpus=2",
        '--resources={"llmnas_evaluator": 2}',
        f"--node-manager-port={worker_port}",
    ]
    with two_raylets(head, worker, "gl") as env:
        yield env, worker_port


def node_processes(port: int) -> list[int]:
    """The worker node's raylet (found by its node-manager port) and its descendants: the
    node's workers and agents. Only this node's: the head's processes are untouched."""
    parent: dict[int, int] = {}
    raylets = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        parent[int(proc.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        if "raylet" in cmdline and f"--node_manager_port={port}" in cmdline:
            raylets.append(int(proc.name))
    mine = set(raylets)
    while grown := {pid for pid, ppid in parent.items() if ppid in mine} - mine:
        mine |= grown
    return sorted(mine)


def ray_list(env: dict[str, str], what: str) -> list[dict[str, Any]]:
    """`ray list WHAT` as JSON rows (the CLI prints a sentence, not [], when there are none)."""
    out = ray_cli(env, "list", what, "--format", "json", "--limit", "10000", "--detail")
    return json.loads(out) if out.lstrip().startswith("[") else []


def running_evaluations(env: dict[str, str]) -> list[dict[str, Any]]:
    return [
        t
        for t in ray_list(env, "tasks")
        if t.get("state") == "RUNNING" and str(t.get("name", "")).endswith("Evaluator.evaluate")
    ]


def worker_node_id(env: dict[str, str]) -> str:
    nodes = ray_list(env, "nodes")
    (worker,) = [n for n in nodes if not n.get("is_head_node")]
    return worker["node_id"]


def kill_while_evaluating(
    env: dict[str, str], port: int, node: str, job: str, deadline: float
) -> int:
    """Wait until both of the worker node's evaluators run an evaluation, then SIGKILL its
    processes. Both, not one: the placement file lists the evaluators that said where they
    run, and a CI run killed the node while its second evaluator was still starting. A job
    that ended first fails the test at once, with its logs."""
    polls = 0
    while time.monotonic() < deadline:
        if sum(t.get("node_id") == node for t in running_evaluations(env)) >= 2:
            time.sleep(3)  # inside the training, past the sandbox start
            pids = node_processes(port)
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            return len(pids)
        polls += 1
        if polls % 10 == 0 and (final := job_status(env, job)):
            logs = ray_cli(env, "job", "logs", job)
            raise AssertionError(f"the job ended {final} before the node was lost: {logs[-4000:]}")
        time.sleep(1)
    raise AssertionError("the worker node's two evaluators never ran evaluations together")


def job_status(env: dict[str, str], job: str) -> str | None:
    """The job's final status, or None while it runs."""
    status = ray_cli(env, "job", "status", job).lower()
    for final in ("succeeded", "failed", "stopped"):
        if f"'{final}'" in status or f" {final}" in status:
            return final
    return None


def wait_for_job(env: dict[str, str], job: str, deadline: float) -> str:
    while time.monotonic() < deadline:
        if final := job_status(env, job):
            return final
        time.sleep(5)
    return "timed out"


def test_gpu_layout_and_a_node_lost_mid_cycle(
    gpu_cluster: tuple[dict[str, str], int], pg_database, tmp_path: Path
) -> None:
    env, worker_port = gpu_cluster
    url = pg_database()
    run_dir = tmp_path / "runs"
    config = tmp_path / "gpu-layout.yaml"
    config.write_text(
        yaml.safe_dump({**CONFIG, "cluster": {**CONFIG["cluster"], "run_dir": str(run_dir)}})
    )
    env_vars = {"LLMNAS_ARCHIVE_URL": url, "LLMNAS_CACHE": str(cache_root())}
    job = "llmnas-gpu-layout"
    submitted = submit_job(
        [
            str(BIN / "ray"),
            "job",
            "submit",
            f"--submission-id={job}",
            "--no-wait",
            "--working-dir",
            ".",
            "--runtime-env-json",
            json.dumps({"env_vars": env_vars}),
            "--",
            "llmnas",
            "run",
            "--config",
            str(config),
            "--run-id",
            RUN,
        ],
        env,
    )
    assert submitted.returncode == 0, submitted.stderr[-4000:]
    deadline = time.monotonic() + 900
    worker = worker_node_id(env)
    killed = kill_while_evaluating(env, worker_port, worker, job, deadline)
    assert killed >= 2  # the raylet and at least one worker process
    final = wait_for_job(env, job, deadline)
    logs = ray_cli(env, "job", "logs", job)
    assert final == "succeeded", logs[-6000:]

    # placement: what the run wrote, checked against Ray's own view of the actors
    placement = json.loads((run_dir / RUN / "placement.json").read_text())
    (gen,) = placement["generators"]
    (ft,) = placement["finetuner"]
    evaluators = placement["evaluators"]
    head = gen["node_id"]
    assert head != worker and ft["node_id"] == head  # both on the inference node
    assert len(gen["gpu_ids"]) == 1 and len(ft["gpu_ids"]) == 1
    assert set(gen["gpu_ids"]) != set(ft["gpu_ids"])  # each its own GPU
    first_three = evaluators[:3]
    by_node = sorted(e["node_id"] for e in first_three)
    assert by_node == sorted([head, worker, worker])  # one per evaluator GPU
    head_gpus = {g for e in first_three if e["node_id"] == head for g in e["gpu_ids"]}
    head_gpus |= set(gen["gpu_ids"]) | set(ft["gpu_ids"])
    assert len(head_gpus) == 3  # the head's three GPUs, none shared
    assert all(len(e["gpu_ids"]) == 1 and e["problem"] is None for e in evaluators)
    actors = ray_list(env, "actors")
    ray_nodes = {a["actor_id"]: a.get("node_id") for a in actors}
    for place in [gen, ft, *first_three]:
        assert ray_nodes.get(place["actor"]) == place["node_id"], place
    # the logical GPUs were named, not silently used (console or the run's driver.log)
    driver_log = (run_dir / RUN / "driver.log").read_text(errors="replace")
    assert "CUDA sees no device" in logs + driver_log

    # the node loss: retried on the head, each candidate once, the lost attempts on record
    with Archive.from_url(url) as archive:
        assert archive.get_run(RUN).status is RunStatus.COMPLETED
        assert archive.last_completed_cycle(RUN) == 1
        seeds = archive.candidates(RUN, cycle=0)
        assert len(seeds) == SEEDS and len({c.slot for c in seeds}) == SEEDS
        assert all(c.status is CandidateStatus.EVALUATED for c in seeds), [
            (c.status, c.message) for c in seeds
        ]
        rows = [e for e in archive.evaluations(RUN) if e.budget == "budget_s=20"]
        keys = [(e.arch_hash, e.seed) for e in rows]
        assert len(keys) == len(set(keys))  # recorded exactly once
        assert {e.node_id for e in rows if e.attempt > 1} == {head}
        spans = archive.spans(RUN)
    lost = [s for s in spans if s.outcome == "lost"]
    where = {head: "head", worker: "worker"}
    seen = [(s.key, s.attempt, where.get(s.node_id or "", s.node_id), s.message) for s in lost]
    assert any(s.node_id == worker for s in lost), seen
    assert all(s.node_id == worker for s in lost if s.attempt == 1), seen
    assert {s.kind for s in spans} >= {"evaluate", "generate", "admit"}
