"""Where the driver's actors go: Ray connection, placement and start-up in one place.

- Ray: inside a Ray job (or with `cluster.address` / RAY_ADDRESS) the driver joins that
  cluster; otherwise it starts a local one with enough logical CPUs for its actors (on a
  2-core laptop the actors time-share the cores; Ray only counts slots).
- Generation actors ask for `tensor_parallel_size` GPUs each on GPU clusters, the
  fine-tuning actor `cluster.finetune_num_gpus`, evaluators one GPU each (cluster/pool.py).
- Adapters move between nodes as files through the object store, so a cluster needs no
  shared filesystem: `adapter_files` runs on the node that wrote the adapter.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

import llmnas_dist
from cluster.pool import EvaluatorPool, Placement, evaluator_placement
from llmnas_dist.config import Config
from workers.finetuner import FinetuneActor, finetune_options
from workers.generator import GenerationActor, generation_options

log = logging.getLogger(__name__)

INFERENCE_RESOURCE = "llmnas_inference"  # custom resource of inference GPU nodes (deploy/)
ACTOR_CPUS = 1.0  # logical CPUs a generation or fine-tuning actor asks for
MAX_ADAPTER_BYTES = 2 * 1024**3  # refuse to ship anything larger: not an adapter


def code_root() -> Path:
    """The folder the driver imports this project's packages from (site-packages, or the
    checkout of an editable install)."""
    return Path(llmnas_dist.__file__).resolve().parents[1]


def connect_ray(cfg: Config, evaluators: int) -> bool:
    """Join the configured or surrounding cluster, else start a local one; True when this
    process started Ray (and so should shut it down).

    Ray puts the driver's working directory first on its workers' sys.path (unless the job
    has a working_dir): `llmnas run` started inside another checkout of llmnas-dist ran its
    driver from the installed code and its actors from that checkout (seen: a run whose
    evaluators recorded no recipe fingerprints). So Ray starts in the driver's own code
    root, and the workers import what the driver imports."""
    if ray.is_initialized():
        return False
    with contextlib.chdir(code_root()):
        return _init_ray(cfg, evaluators)


def _init_ray(cfg: Config, evaluators: int) -> bool:
    address = cfg.cluster.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True, configure_logging=False)
        return False
    wanted = evaluators * cfg.evaluation.cpus_per_evaluator + ACTOR_CPUS * (
        cfg.generation.num_actors + 1
    )
    num_cpus = max(cfg.cluster.num_cpus or os.cpu_count() or 1, int(wanted + 0.999))
    # address="local": a new instance even if `ray start` left a cluster on this machine
    # configure_logging=False: Ray's own log lines go through the root logger (driver.log)
    ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=False,
        log_to_driver=True,
        configure_logging=False,
    )
    return True


@dataclass
class Actors:
    """The driver's workers: generation engines, one fine-tuner, the evaluator pool."""

    generators: list[Any]
    finetuner: Any
    pool: EvaluatorPool

    def shutdown(self) -> None:
        self.pool.shutdown()
        for actor in [*self.generators, self.finetuner]:
            ray.kill(actor, no_restart=True)


def evaluators_wanted(cfg: Config, override: int | None = None) -> Placement:
    """The evaluator placement: `--evaluators`, then config, then one per GPU (or 2 CPUs)."""
    placement = evaluator_placement(cfg.evaluation, ray.cluster_resources())
    if override is not None:
        if override < 1:
            raise ValueError(f"--evaluators must be at least 1, got {override}")
        placement = Placement(override, placement.num_gpus, placement.num_cpus, placement.resources)
    return placement


def start_actors(cfg: Config, placement: Placement) -> Actors:
    """Start every actor of a run (engines load in the background while the pool warms)."""
    resources = ray.cluster_resources()
    generators = [start_generator(cfg, resources) for _ in range(cfg.generation.num_actors)]
    ft_opts = finetune_options(cfg.cluster, resources, ACTOR_CPUS)
    ft_opts["resources"] = inference_tag(resources)
    finetuner = FinetuneActor.options(**ft_opts).remote(
        cfg.generation.model, cfg.finetune, cfg.cluster.logical_gpus
    )
    pool = EvaluatorPool(
        cfg.evaluation, cfg.admission, placement=placement, logical_gpus=cfg.cluster.logical_gpus
    )
    return Actors(generators, finetuner, pool)


def inference_tag(resources: dict[str, float]) -> dict[str, float]:
    """Inference nodes (deploy/) carry `llmnas_inference`: engines and the fine-tuner go
    there; a cluster without the tag places them anywhere."""
    return {INFERENCE_RESOURCE: 1.0} if resources.get(INFERENCE_RESOURCE) else {}


def start_generator(cfg: Config, resources: dict[str, float] | None = None) -> Any:
    """One generation actor: `tensor_parallel_size` GPUs on a GPU cluster, on an inference
    node where the cluster tags them (also what replaces a lost one)."""
    resources = resources if resources is not None else ray.cluster_resources()
    tag = inference_tag(resources)
    gen_opts = generation_options(cfg.generation, resources, ACTOR_CPUS)
    gen_opts["resources"] = {k: v * cfg.generation.tensor_parallel_size for k, v in tag.items()}
    return GenerationActor.options(**gen_opts).remote(
        cfg.generation, max_lora_rank=cfg.finetune.r, logical_gpus=cfg.cluster.logical_gpus
    )


@ray.remote(num_cpus=0)
def _read_folder(path: str) -> dict[str, bytes]:
    folder = Path(path)
    files = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}
    if sum(len(b) for b in files.values()) > MAX_ADAPTER_BYTES:
        raise ValueError(f"{path} holds more than {MAX_ADAPTER_BYTES} bytes: not an adapter")
    return files


def actor_node(actor: Any) -> str:
    """The node id an actor runs on."""
    return ray.get(actor.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id()))


def adapter_files(actor: Any, path: str) -> Any:
    """An object ref to the files of the adapter folder `path` on `actor`'s node."""
    strategy = NodeAffinitySchedulingStrategy(actor_node(actor), soft=False)
    return _read_folder.options(scheduling_strategy=strategy).remote(path)
