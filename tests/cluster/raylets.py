"""A local multi-node Ray cluster for the cluster tests: raylets started by hand on this
machine, each with its own ports and temp dir, and `ray job submit` against the head.
Shared by test_ray_job.py and test_cluster_layout.py.
"""

from __future__ import annotations

import contextlib
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

from fixtures import ROOT

BIN = Path(sys.executable).parent
AGENT_WAIT_S = 600  # how long the head's job agent may take to come up on a loaded machine


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
    # a temp dir per raylet: with one shared dir, the worker's runtime-env agent deleted
    # and unpacked again the job's working_dir while the driver read its files (seen in a
    # run: FileNotFoundError on llmnas_dist/seeds, 6 s into the job)
    common = ["--disable-usage-stats"]
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
            f"--temp-dir={base / 'ray'}",
        )
        ray_cmd(
            "start",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--address=127.0.0.1:{gcs}",
            *worker,
            *common,
            f"--temp-dir={base / 'rw'}",
        )
        yield {**env, "RAY_ADDRESS": f"http://127.0.0.1:{dash}"}
    finally:
        stop_cluster(base)
        shutil.rmtree(base, ignore_errors=True)


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
