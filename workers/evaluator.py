"""EvaluatorActor: a thin Ray actor that proxy-trains one candidate at a time.

All the work is `llmnas_dist.evaluation.evaluate.evaluate_program` (static checks, then training in
a fresh sandboxed child), so a program that hangs, blows memory or crashes costs one
evaluation, never the actor. The actor adds where and when it ran (node, GPU, actor id,
start and end) and the deadline it ran under to each result: an `EvalRecord`
(llmnas_dist/evaluation/evaluate.py), the one type that crosses Ray back to the driver.
An evaluator holding GPU ids that CUDA cannot see refuses to evaluate (workers/gpus.py)
unless `cluster.logical_gpus`.
Placement (one GPU each, or CPUs) is decided by the pool's factory, not here.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

import ray

from llmnas_dist.config import AdmissionConfig, EvaluationConfig
from llmnas_dist.errors import CandidateRejected, ErrorClass, PlacementError, truncate
from llmnas_dist.evaluation.evaluate import EvalRecord, evaluate_program
from llmnas_dist.evaluation.recipe import Recipe
from llmnas_dist.sandbox.runner import SandboxError, SandboxLimits
from llmnas_dist.spans import SpanKind, Where
from workers.gpus import assigned_gpus, cuda_devices, locate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalTask:
    """One evaluation to run: a program on a dataset with one seed and one budget."""

    key: str  # the caller's id (candidate id); results come back under it
    code: str
    dataset: str
    seed: int = 0
    epochs: float | None = None  # None and budget_s None: the configured budget
    budget_s: float | None = None
    arch_hash: str | None = None
    candidate_id: str | None = None  # the archive's candidate row, when there is one
    kind: str = SpanKind.EVALUATE.value  # or "study": how its span is labelled
    deadline_s: float | None = None  # wall-clock limit (None: evaluation.timeout_s)


class Evaluator:
    """The actor's body (plain class, so it can also run without Ray)."""

    def __init__(
        self,
        evaluation: EvaluationConfig,
        admission: AdmissionConfig | None = None,
        gpu_ids: list[str] | None = None,
        logical_gpus: bool = False,
    ) -> None:
        self.cfg = evaluation
        self.admission = admission or AdmissionConfig()
        self.limits = SandboxLimits.from_evaluation(evaluation)
        if gpu_ids is None:  # the GPUs Ray assigned to this actor (none without Ray)
            gpu_ids = assigned_gpus()
        self.gpu_ids = [str(g) for g in gpu_ids]
        self.place = locate(self.gpu_ids, logical_gpus, "evaluator")
        # logical GPUs (a test of the GPU layout on CPU machines): train on the CPU
        self.train_gpus = [] if logical_gpus and cuda_devices() == 0 else self.gpu_ids

    def where(self) -> Where:
        """Node, GPUs and actor id of this evaluator, and why it must not run, if so."""
        return self.place

    def device(self) -> str:
        # The sandbox shows its child exactly our GPUs (CUDA_VISIBLE_DEVICES = train_gpus),
        # so the first of them is cuda:0 there.
        return "cuda:0" if self.train_gpus else "cpu"

    def evaluate(self, task: EvalTask) -> EvalRecord:
        """Evaluate one task; always returns a result (failures included), with where and
        when it ran."""
        if self.place.problem:
            raise PlacementError(self.place.problem)
        started = time.time()
        recipe = Recipe.from_config(
            self.cfg,
            seed=task.seed,
            epochs=task.epochs,
            budget_s=task.budget_s,
            device=self.device(),
        )
        limits = self.limits
        if task.deadline_s is not None:
            limits = limits.with_deadline(task.deadline_s)
        try:
            result = evaluate_program(
                task.code,
                task.dataset,
                recipe,
                limits,
                data_root=self.cfg.data_root,
                admission=self.admission,
                gpu_ids=self.train_gpus,
            )
        except (SandboxError, CandidateRejected, ValueError) as exc:
            # Not the program's verdict: the pool retries it like a lost worker.
            raise RuntimeError(f"evaluation infrastructure failed: {truncate(str(exc))}") from exc
        if self.train_gpus and result.ok and result.device == "cpu":
            # CUDA could not start in the sandbox (driver, device files: the child's output
            # says why): say so loudly rather than let a GPU cluster train on CPUs unnoticed.
            log.warning("evaluator on GPU %s trained %s on the CPU", self.gpu_ids, task.key)
        return EvalRecord.of(
            result,
            key=task.key,
            where=self.place,
            started=started,
            ended=time.time(),
            deadline_s=limits.timeout_s,
            recipe=trained_recipe(recipe, result.device).fingerprint,
        )


def trained_recipe(recipe: Recipe, device: str | None) -> Recipe:
    """The recipe on the device the sandbox says it trained on (a GPU evaluator whose CUDA
    failed trained on the CPU); a device name the recipe does not know keeps the asked one."""
    if device is not None and (device == "cpu" or device.startswith("cuda")):
        return replace(recipe, device=device)
    return recipe


def worker_lost(task: EvalTask, cfg: EvaluationConfig, attempts: int, reason: str) -> EvalRecord:
    """The result recorded for a task whose evaluators kept dying (WORKER_LOST)."""
    own_budget = task.epochs is not None or task.budget_s is not None
    epochs, budget_s = (task.epochs, task.budget_s) if own_budget else (cfg.epochs, cfg.budget_s)
    return EvalRecord(
        ok=False,
        dataset=task.dataset,
        seed=task.seed,
        epochs=epochs,
        budget_s=budget_s,
        error_class=ErrorClass.WORKER_LOST.value,
        message=truncate(f"evaluator lost {attempts} time(s); last: {reason}"),
        key=task.key,
    )


EvaluatorActor = ray.remote(Evaluator)
