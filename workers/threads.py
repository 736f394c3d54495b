"""Threads for an actor whose phase runs alone on its node.

Ray starts an actor with OMP_NUM_THREADS = its num_cpus (1), so torch in the actor uses one
thread. The warm start runs before cycle 1 while every other actor waits, and each cycle's
fine-tune while generation waits for its adapter: both take every core. Measured (2 cores,
the default's 120 warm-start examples, the same 5 batches of 4): the CE update's step
36.0 s on one thread, 20.5 s on two (1.76x); the warm start's (gradient stopped at the
prompt) 11.6 s and 7.5 s (1.55x). Before the fine-tune was widened, a default run's
fine-tune phases kept 51-61% of the node's cores busy (`phases.json`).
Evaluators run side by side, one thread each. Generation (transformers) is widened
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
