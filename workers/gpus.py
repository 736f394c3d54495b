"""What an actor knows about where it runs: node, actor id, the GPUs Ray gave it, and
whether CUDA can see them.

Ray assigns GPU ids from what a node declares (`ray start --num-gpus N`), not from what
it has, so an actor can hold GPU ids that no CUDA device backs: a misconfigured node on a
real cluster, or logical GPUs on purpose (the placement tests run a GPU cluster's layout on
CPU machines). The first must stop the run with the ids named; the second is allowed only
by `cluster.logical_gpus`, and then the actor computes on the CPU and says so.
"""

from __future__ import annotations

import logging
import os

import ray

from llmnas_dist.spans import Where

log = logging.getLogger(__name__)


def assigned_gpus() -> list[str]:
    """The GPU ids Ray gave this actor (none outside Ray)."""
    return [str(g) for g in ray.get_gpu_ids()] if ray.is_initialized() else []


def cuda_devices() -> int:
    """Devices CUDA sees in this process (CUDA_VISIBLE_DEVICES applied); 0 without CUDA."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def locate(gpu_ids: list[str], logical_gpus: bool, role: str) -> Where:
    """This process's place, with a problem when it holds GPUs CUDA cannot see and logical
    GPUs are not allowed."""
    ctx = ray.get_runtime_context() if ray.is_initialized() else None
    problem = None
    if gpu_ids and cuda_devices() == 0:
        node = ctx.get_node_id() if ctx else "this machine"
        ids = ",".join(gpu_ids)
        seen = f"Ray gave this {role} GPU id(s) {ids} on node {node}, but CUDA sees no device"
        if logical_gpus:
            log.warning("%s: logical GPUs (cluster.logical_gpus), computing on the CPU", seen)
        else:
            problem = (
                f"{seen} (driver, CUDA_VISIBLE_DEVICES or the node's --num-gpus is wrong). "
                "Set cluster.logical_gpus: true only to test a GPU layout on CPU machines."
            )
    return Where(
        actor=(ctx.get_actor_id() if ctx else None) or f"pid-{os.getpid()}",
        node_id=ctx.get_node_id() if ctx else None,
        gpu_ids=tuple(gpu_ids),
        pid=os.getpid(),
        problem=problem,
    )
