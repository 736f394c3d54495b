"""Threads for an actor whose phase runs alone on its node.

Ray starts an actor with OMP_NUM_THREADS = its num_cpus (1), so torch in the actor uses one
thread. The warm start runs before cycle 1 while every other actor waits: it takes every
core. Evaluators run side by side, one thread each. Generation (transformers) is widened
only for a call that the driver sends while no evaluation runs (`alone`):
`bench/generation_bench.py threads` measured (2 cores, batch 8, 64 new tokens) 1.42x the
one-thread rate alone but 0.66x beside one busy thread, since torch's threads then wait on
each other. In a default run the cycle's first batches start while the evaluators idle.
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
