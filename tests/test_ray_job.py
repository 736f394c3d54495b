"""`ray job submit --working-dir . -- llmnas run --config ...` on a real two-node cluster:
a head and a second raylet on this machine, token authentication on, PostgreSQL archive.
The job must end SUCCEEDED, the archive must hold the completed run, and evaluations must
have run on both nodes."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from db.archive import Archive
from db.models import RunStatus
from llmnas_dist.generation.models import cache_root

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
AGENT_WAIT_S = 600  # how long the head's job agent may take to come up on a loaded machine
CONFIG = {
    "ce": {"cycles": 1, "candidates_per_cycle": 2, "rho": 0.25, "dataset": "digits"},
    "generation": {
        "max_new_tokens": 24,
        "max_model_len": 2048,
        "warm_start": False,
        "batch_size": 2,
        "max_retries": 0,
    },
    "evaluation": {"epochs": 0.15, "evaluators": 2, "cpus_per_evaluator": 1.0},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def two_raylets(head: list[str], worker: list[str], prefix: str) -> Iterator[dict[str, str]]:
    """A head and a second raylet on this machine with token auth, each started with its
    own extra `ray start` flags; yields the client environment (HOME holds the token)."""
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))  # short: Unix socket paths
    env = {
        **os.environ,
        "HOME": str(base / "home"),
        "RAY_AUTH_MODE": "token",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("RAY_ADDRESS", None)
    gcs, dash = free_port(), free_port()

    def ray_cmd(*args: str) -> None:
        subprocess.run(
            [str(BIN / "ray"), *args], env=env, check=True, capture_output=True, timeout=180
        )

    ray_cmd("get-auth-token", "--generate")
    # every `ray start` gets a free dashboard-agent port: the default (52365) may be held by
    # another Ray on this machine, and then the head's job agent never comes up
    common = ["--disable-usage-stats", f"--temp-dir={base / 'ray'}"]
    try:
        ray_cmd(
            "start",
            f"--dashboard-agent-listen-port={free_port()}",
            "--head",
            f"--port={gcs}",
            f"--dashboard-port={dash}",
            "--dashboard-host=127.0.0.1",
            *head,
            *common,
        )
        ray_cmd(
            "start",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--address=127.0.0.1:{gcs}",
            *worker,
            *common,
        )
        yield {**env, "RAY_ADDRESS": f"http://127.0.0.1:{dash}"}
    finally:
        stop_cluster(base)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def cluster() -> Iterator[dict[str, str]]:
    """Two raylets with token auth; yields the client environment."""
    head = ["--num-cpus=4", '--resources={"head_node": 1}']
    worker = ["--num-cpus=2", '--resources={"second_node": 1}']
    with two_raylets(head, worker, "rj") as env:
        yield env


def stop_cluster(base: Path) -> None:
    """Kill this cluster's processes only (`ray stop` would kill every Ray on the machine):
    those that name our temp dir on their command line, and their children."""
    named, parent = set(), {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            parent[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if str(base).encode() in (proc / "cmdline").read_bytes():
                named.add(int(proc.name))
        except (OSError, IndexError, ValueError):
            continue
    # and their descendants: some Ray processes rename themselves ("ray::DashboardAgent")
    mine = set(named)
    while grown := {pid for pid, ppid in parent.items() if ppid in mine} - mine:
        mine |= grown
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in mine:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        time.sleep(2)


def submit_job(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """`ray job submit`, asked again while the head's job agent is still starting (a loaded
    machine can take a while; the submission is refused, not half-made, until then). Seen:
    over two minutes while `llmnas run` trained its warm start on the same 2 cores."""
    deadline = time.monotonic() + AGENT_WAIT_S
    while True:
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        if "No available agent" not in done.stdout + done.stderr or time.monotonic() > deadline:
            return done
        time.sleep(3)


def test_ray_job_submit_runs_the_driver_on_two_nodes(
    cluster: dict[str, str], pg_database, tmp_path: Path
) -> None:
    url = pg_database()
    config = tmp_path / "two-node.yaml"
    config.write_text(yaml.safe_dump({**CONFIG, "cluster": {"run_dir": str(tmp_path / "runs")}}))
    # the raylets run with a HOME of their own (the token's): point them at our model cache
    env_vars = {"LLMNAS_ARCHIVE_URL": url, "LLMNAS_CACHE": str(cache_root())}
    submit = submit_job(
        [
            str(BIN / "ray"),
            "job",
            "submit",
            "--submission-id=llmnas-two-node",
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
            "two-node",
        ],
        cluster,
    )
    logs = submit.stdout + submit.stderr
    status = subprocess.run(
        [str(BIN / "ray"), "job", "status", "llmnas-two-node"],
        env=cluster,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "succeeded" in (status.stdout + status.stderr).lower(), logs[-6000:]
    with Archive.from_url(url) as archive:
        assert archive.get_run("two-node").status is RunStatus.COMPLETED
        assert archive.last_completed_cycle("two-node") == 1
        nodes = {e.node_id for e in archive.evaluations("two-node") if e.node_id}
    assert len(nodes) == 2, f"evaluations ran on {nodes}"


def test_job_submit_without_the_token_is_refused(cluster: dict[str, str]) -> None:
    env = {**cluster, "HOME": tempfile.mkdtemp(prefix="notoken")}
    refused = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--", "echo", "hi"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode != 0
    assert "token" in (refused.stdout + refused.stderr).lower()
