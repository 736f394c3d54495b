"""FinetuneActor: a thin Ray actor that trains one LoRA adapter per cycle on the elites.

The work is `llmnas_dist.generation.finetune.train_lora`; the actor turns elite (parent, child)
pairs into delta and full-code examples and returns the adapter's `FinetuneResult` (path,
base model, example count, train loss: what the archive records). Before cycle 1 it also provides
the warm-start adapter theta_0 (`llmnas_dist.generation.warmstart`, cached across runs on its node).
Placement: one GPU (`cluster.finetune_num_gpus`) on clusters with GPUs, CPUs otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ray

from llmnas_dist.config import AdmissionConfig, ClusterConfig, FinetuneConfig, GenerationConfig
from llmnas_dist.errors import PlacementError
from llmnas_dist.evaluation.datasets import dataset_spec
from llmnas_dist.generation.finetune import (
    ElitePair,
    FinetuneResult,
    TrainStep,
    build_examples,
    train_lora,
)
from llmnas_dist.generation.warmstart import WarmStart, warm_start_adapter
from llmnas_dist.spans import Where
from workers.gpus import assigned_gpus, locate
from workers.threads import node_threads


def finetune_options(
    cfg: ClusterConfig, cluster_resources: dict[str, float], num_cpus: float = 1.0
) -> dict[str, Any]:
    """Ray actor options: `finetune_num_gpus` GPUs where the cluster has GPUs, else none."""
    gpus = cluster_resources.get("GPU", 0.0)
    return {
        "num_gpus": min(cfg.finetune_num_gpus, gpus) if gpus else 0.0,
        "num_cpus": num_cpus,
        "max_restarts": 0,
        # two calls at once: `progress` answers while `train` or `warm_start` runs
        "max_concurrency": 2,
    }


class Finetuner:
    """The actor's body (a plain class, so it also runs without Ray)."""

    def __init__(self, model: str, cfg: FinetuneConfig, logical_gpus: bool = False) -> None:
        self.model = model
        self.cfg = cfg
        self.place = locate(assigned_gpus(), logical_gpus, "fine-tuning actor")
        if self.place.problem:
            raise PlacementError(self.place.problem)
        self.latest: TrainStep | None = None  # the running training's last step

    def where(self) -> Where:
        return self.place

    def progress(self) -> TrainStep | None:
        """The last step of the training under way (None before its first step). The actor
        runs two calls at once, so the driver can ask this while `train` or `warm_start`
        runs."""
        return self.latest

    def _heard(self, step: TrainStep) -> None:
        self.latest = step

    def train(
        self,
        elites: Sequence[ElitePair],
        dataset: str,
        out_dir: str,
        version: int,
        seed: int = 0,
        init_adapter: str | None = None,
    ) -> FinetuneResult:
        """Train the cycle's adapter on the elite pairs; returns its metadata."""
        self.latest = None
        examples = build_examples(
            elites, dataset_spec(dataset), self.cfg.full_code_fraction, seed=seed
        )
        # the CE update runs alone: generation waits for its adapter, evaluations are done
        with node_threads():
            return train_lora(
                self.model,
                examples,
                self.cfg,
                out_dir,
                seed=seed,
                init_adapter=init_adapter,
                version=version,
                prompt_grad=self.cfg.prompt_grad,
                on_step=self._heard,
            )

    def warm_start(
        self,
        generation: GenerationConfig,
        admission: AdmissionConfig,
        dataset: str,
        seeds: dict[str, str] | None = None,
        input_size: int | None = None,
    ) -> WarmStart:
        """theta_0 for this model: the cached warm-start adapter, or trained now (on the
        run's seed programs, the shipped ones when None): its path, whether it was cached,
        n_examples, train_loss, seconds (this call's) and key."""
        if generation.model != self.model:
            raise ValueError(
                f"warm start for model {generation.model!r}, but this fine-tuner trains "
                f"{self.model!r}: the adapters would not fit one base model"
            )
        self.latest = None
        with node_threads():
            return warm_start_adapter(
                generation,
                self.cfg,
                admission,
                dataset,
                seeds=seeds,
                input_size=input_size,
                on_step=self._heard,
            )


# No log handler of its own in the actor: Ray forwards a worker's stderr to the driver's
# console, where the step lines of a training (once printed here) ran beside the driver's
# live line, which shows the same step, loss and ETA from `progress()`.
FinetuneActor = ray.remote(Finetuner)
