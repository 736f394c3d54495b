"""Threads for an actor whose phase runs alone on its node.

Ray starts an actor with OMP_NUM_THREADS = its num_cpus (1), so torch in the actor uses one
thread. The warm start runs before cycle 1 while every other actor waits, and generation
runs while the evaluators wait for its answers: on a 2-core machine one thread takes almost
twice as long. Evaluators are not widened: they run side by side, one thread each.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


@contextlib.contextmanager
def node_threads() -> Iterator[None]:
    """torch uses every core this process may run on, for the duration; then as before."""
    import torch

    affinity = getattr(os, "sched_getaffinity", None)  # Linux; elsewhere all cores
    cores = len(affinity(0)) if affinity is not None else os.cpu_count() or 1
    before = torch.get_num_threads()
    torch.set_num_threads(max(before, cores))
    try:
        yield
    finally:
        torch.set_num_threads(before)
