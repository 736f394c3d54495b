"""What a sandboxed child starts with, shared by the runner and the zygote's parent side.

Each child is `python -I -m llmnas_dist.sandbox.child` (`child_command`) with a scrubbed
environment (`child_env`: PATH, HOME=workdir, LANG and thread caps only, plus a GPU grant's
CUDA variables), so no database URL, token or Ray address is inherited; `confinement` gives
the paths it may read (the interpreter, its packages, system libraries, extra data roots)
and the device files it may open, which the child enforces with Landlock.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from llmnas_dist.sandbox.child.confine import BASE_DEVICE_FILES
from llmnas_dist.sandbox.gpus import GpuGrant

CHILD_MODULE = "llmnas_dist.sandbox.child"
STARTUP_TIMEOUT_S = 120.0  # interpreter + torch import on a loaded machine, before the program runs
THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)


def child_command(*args: str) -> list[str]:
    """The child's command line: an isolated interpreter (-I: no user site, no environment
    variables, no script directory on the path) running the child package."""
    return [sys.executable, "-I", "-m", CHILD_MODULE, *args]


def confinement(
    extra_read_paths: Sequence[str], grant: GpuGrant | None
) -> tuple[list[str], list[str]]:
    """(read paths, device files) of a run: a CPU run's rules, plus the grant of a GPU run."""
    paths = read_paths(extra_read_paths)
    device_paths = list(BASE_DEVICE_FILES)
    if grant is not None:
        paths = sorted(set(paths) | set(grant.read_paths))
        device_paths += grant.device_files
    return paths, device_paths


def child_env(workdir: str, threads: int, grant: GpuGrant | None = None) -> dict[str, str]:
    """A fresh environment: nothing inherited, so no secret can leak into the child; a GPU
    run adds only its grant's CUDA variables."""
    env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"}
    env.update({name: str(threads) for name in THREAD_ENV_VARS})
    if grant is not None:
        env.update(grant.env)
    return env


def read_paths(extra: Sequence[str]) -> list[str]:
    """What the program may read: the interpreter, its packages, system libraries."""
    paths = {
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        "/usr",
        "/lib",
        "/lib64",
        "/etc/ld.so.cache",
    }
    paths.update(p for p in sys.path if p and os.path.isabs(p))
    paths.update(os.path.abspath(p) for p in extra)
    return sorted(paths)
