"""EvaluatorActor: a thin Ray actor that proxy-trains one candidate at a time.

All the work is `llmnas_dist.evaluation.evaluate_program` (static checks, then training in
a fresh sandboxed child), so a program that hangs, blows memory or crashes costs one
evaluation, never the actor. The actor adds where it ran (node, GPU, actor id) to each
result. Placement (one GPU each, or CPUs) is decided by the pool's factory, not here.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import ray

from llmnas_dist.config import AdmissionConfig, EvaluationConfig
from llmnas_dist.errors import CandidateRejected, ErrorClass, truncate
from llmnas_dist.evaluation import budget_key, evaluate_program
from llmnas_dist.proxy import Recipe
from llmnas_dist.sandbox import SandboxError, SandboxLimits

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


class Evaluator:
    """The actor's body (plain class, so it can also run without Ray)."""

    def __init__(
        self,
        evaluation: EvaluationConfig,
        admission: AdmissionConfig | None = None,
        gpu_ids: list[str] | None = None,
    ) -> None:
        self.cfg = evaluation
        self.admission = admission or AdmissionConfig()
        self.limits = SandboxLimits.from_evaluation(evaluation)
        if gpu_ids is None:  # the GPUs Ray assigned to this actor (none without Ray)
            gpu_ids = [str(g) for g in ray.get_gpu_ids()] if ray.is_initialized() else []
        self.gpu_ids = [str(g) for g in gpu_ids]

    def where(self) -> dict[str, Any]:
        """Node, GPU and actor this evaluator runs on."""
        ctx = ray.get_runtime_context() if ray.is_initialized() else None
        return {
            "node_id": ctx.get_node_id() if ctx else None,
            "gpu_id": ",".join(self.gpu_ids) or None,
            "worker_id": (ctx.get_actor_id() if ctx else None) or f"pid-{os.getpid()}",
            "pid": os.getpid(),
        }

    def device(self) -> str:
        # The sandbox shows its child exactly our GPUs (CUDA_VISIBLE_DEVICES = self.gpu_ids),
        # so the first of them is cuda:0 there.
        return "cuda:0" if self.gpu_ids else "cpu"

    def evaluate(self, task: EvalTask) -> dict[str, Any]:
        """Evaluate one task; always returns a result dict (failures included)."""
        recipe = Recipe.from_config(
            self.cfg,
            seed=task.seed,
            epochs=task.epochs,
            budget_s=task.budget_s,
            device=self.device(),
        )
        try:
            result = evaluate_program(
                task.code,
                task.dataset,
                recipe,
                self.limits,
                data_root=self.cfg.data_root,
                admission=self.admission,
                gpu_ids=self.gpu_ids,
            ).to_dict()
        except (SandboxError, CandidateRejected, ValueError) as exc:
            # Not the program's verdict: the pool retries it like a lost worker.
            raise RuntimeError(f"evaluation infrastructure failed: {truncate(str(exc))}") from exc
        if self.gpu_ids and result.get("ok") and result.get("device") == "cpu":
            # CUDA could not start in the sandbox (driver, device files: the child's output
            # says why): say so loudly rather than let a GPU cluster train on CPUs unnoticed.
            log.warning("evaluator on GPU %s trained %s on the CPU", self.gpu_ids, task.key)
        return {**result, **self.where(), "key": task.key}


def worker_lost(
    task: EvalTask, cfg: EvaluationConfig, attempts: int, reason: str
) -> dict[str, Any]:
    """The result recorded for a task whose evaluators kept dying (WORKER_LOST)."""
    own_budget = task.epochs is not None or task.budget_s is not None
    epochs, budget_s = (task.epochs, task.budget_s) if own_budget else (cfg.epochs, cfg.budget_s)
    return {
        "key": task.key,
        "ok": False,
        "dataset": task.dataset,
        "seed": task.seed,
        "epochs": epochs,
        "budget_s": budget_s,
        "budget": budget_key(epochs, budget_s),
        "error_class": ErrorClass.WORKER_LOST.value,
        "message": truncate(f"evaluator lost {attempts} time(s); last: {reason}"),
        "node_id": None,
        "gpu_id": None,
        "worker_id": None,
    }


EvaluatorActor = ray.remote(Evaluator)
