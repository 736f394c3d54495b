"""One proxy evaluation of a program: static checks, sandboxed training, a checked verdict.

The parent never trusts what comes back from the sandbox: every field of the `train`
task's result is type- and range-checked here, and a diverging loss becomes a failed
evaluation with `nan_output`. Infrastructure failures (the sandbox cannot start) raise
SandboxError to the caller: they are not the program's fault and must not be archived as
a verdict on it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from llmnas_dist.config import AdmissionConfig
from llmnas_dist.errors import CandidateRejected, ErrorClass, truncate
from llmnas_dist.evaluation.datasets import dataset_file, dataset_spec
from llmnas_dist.evaluation.recipe import Recipe
from llmnas_dist.program.lemur import check_own_trainer, program_prm
from llmnas_dist.program.static import check_static
from llmnas_dist.sandbox.runner import SandboxLimits, run_in_sandbox
from llmnas_dist.spans import Where
from llmnas_dist.vocab import budget_key

FLOAT_FIELDS = ("accuracy", "loss", "epochs_done", "samples_per_s")


@dataclass(frozen=True)
class EvalResult:
    """The outcome of one evaluation; `ok` False carries error_class and message."""

    ok: bool
    dataset: str
    seed: int
    epochs: float | None
    budget_s: float | None
    accuracy: float | None = None
    loss: float | None = None
    epochs_done: float | None = None
    duration_s: float | None = None
    samples_per_s: float | None = None
    params: int | None = None
    device: str | None = None
    error_class: str | None = None
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "budget": self.budget}

    @property
    def budget(self) -> str:
        return budget_key(self.epochs, self.budget_s)


@dataclass(frozen=True)
class EvalRecord(EvalResult):
    """One evaluation as an evaluator actor returns it (what crosses Ray to the driver and
    is recorded in the archive): the result, the task's `key`, where it ran (None: its
    evaluators were lost), when (Unix seconds), the deadline it ran under, the fingerprint
    of its recipe (`Recipe.fingerprint`) and, for a result taken from an earlier run instead
    of training again, the id of the archived evaluation it copies."""

    key: str = ""
    where: Where | None = None
    started: float | None = None
    ended: float | None = None
    deadline_s: float | None = None
    recipe: str | None = None
    reused_from: int | None = None

    @classmethod
    def of(cls, result: EvalResult, **run: Any) -> EvalRecord:
        """`result` with where and when it ran (`run`: keyword arguments)."""
        verdict = {f.name: getattr(result, f.name) for f in fields(EvalResult)}
        return cls(**(verdict | run))

    @property
    def worker_id(self) -> str | None:
        return self.where.actor if self.where else None

    @property
    def node_id(self) -> str | None:
        return self.where.node_id if self.where else None

    @property
    def gpu_id(self) -> str | None:
        return self.where.gpu_id if self.where else None


def _failed(recipe: Recipe, dataset: str, error_class: ErrorClass, message: str) -> EvalResult:
    return EvalResult(
        ok=False,
        dataset=dataset,
        seed=recipe.seed,
        epochs=recipe.epochs,
        budget_s=recipe.budget_s,
        error_class=ErrorClass(error_class).value,
        message=truncate(message),
    )


def _number(result: dict[str, Any], key: str) -> float:
    value = result.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise CandidateRejected(ErrorClass.CRASHED, f"malformed training result ({key})")
    if value < 0:
        raise CandidateRejected(ErrorClass.CRASHED, f"malformed training result ({key})")
    return float(value)


def train_verdict(outcome: dict[str, Any], dataset: str, recipe: Recipe) -> EvalResult:
    """Judge a `train` run of the sandbox; the program cannot choose its error class."""
    if not outcome["ok"]:
        return _failed(recipe, dataset, outcome["error_class"], outcome["message"])
    result = outcome["result"]
    try:
        params = result.get("params")
        if type(params) is not int or params < 0:
            raise CandidateRejected(ErrorClass.CRASHED, "malformed training result (params)")
        if result.get("diverged") is True:
            step = result.get("step")
            raise CandidateRejected(
                ErrorClass.NAN_OUTPUT,
                f"training loss became NaN or inf (by step {step if type(step) is int else '?'})",
            )
        values = {key: _number(result, key) for key in FLOAT_FIELDS}
        if result.get("diverged") is not False or values["accuracy"] > 1.0:
            raise CandidateRejected(ErrorClass.CRASHED, "malformed training result")
    except CandidateRejected as exc:
        return _failed(recipe, dataset, exc.error_class, exc.message)
    device = result.get("device")
    return EvalResult(
        ok=True,
        dataset=dataset,
        seed=recipe.seed,
        epochs=recipe.epochs,
        budget_s=recipe.budget_s,
        params=params,
        duration_s=float(outcome["duration_s"]),  # measured by the parent, not the program
        device=device if isinstance(device, str) and len(device) < 32 else None,
        accuracy=values["accuracy"],
        loss=values["loss"],
        epochs_done=values["epochs_done"],
        samples_per_s=values["samples_per_s"],
    )


def gpu_ids_for_device(device: str, parent_env: Mapping[str, str]) -> list[str]:
    """The CUDA_VISIBLE_DEVICES entry that `cuda[:N]` names in this process (the N-th of
    this process's visible GPUs), for callers that name a device instead of passing GPU ids."""
    _, _, index_text = device.partition(":")
    if index_text and not index_text.isdigit():
        raise ValueError(f"device must be 'cuda' or 'cuda:N', got {device!r}")
    index = int(index_text or 0)
    visible = parent_env.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return [str(index)]
    entries = [e.strip() for e in visible.split(",") if e.strip()]
    if index >= len(entries):
        raise ValueError(f"{device} is not among CUDA_VISIBLE_DEVICES={visible!r}")
    return [entries[index]]


def evaluate_program(
    code: str,
    dataset: str,
    recipe: Recipe,
    limits: SandboxLimits,
    *,
    data_root: str | None = None,
    admission: AdmissionConfig | None = None,
    gpu_ids: Sequence[str] | None = None,
) -> EvalResult:
    """Static checks, then proxy training in a fresh sandbox. The split of the data is the
    dataset's seed-0 split for every evaluation (so seeds vary training, not the test set).
    A cuda recipe trains on `gpu_ids` (default: the GPU its device names here); the sandbox
    shows the child only those, so the child trains on cuda:0. A cpu recipe ignores gpu_ids.
    Raises UsageError for an unavailable dataset, SandboxError when the sandbox fails, and
    ValueError for a device that names no visible GPU."""
    spec = dataset_spec(dataset)
    height = recipe.input_size or spec.height
    try:
        tree = check_static(code, admission or AdmissionConfig())
        prm = program_prm(tree, recipe.batch_size, recipe.epochs or 1.0, height)
        if recipe.name == "lemur":
            check_own_trainer(tree)
    except CandidateRejected as exc:
        return _failed(recipe, dataset, exc.error_class, exc.message)
    path = dataset_file(dataset, 0, data_root)
    ids: Sequence[str] = ()
    child_recipe = recipe
    if recipe.device != "cpu":
        ids = gpu_ids if gpu_ids else gpu_ids_for_device(recipe.device, os.environ)
        child_recipe = replace(recipe, device="cuda:0")
    payload = {
        "recipe": child_recipe.to_payload(),
        "data_path": str(path),
        "num_classes": spec.num_classes,
        "prm": prm,
    }
    outcome = run_in_sandbox(
        code, "train", payload, limits, extra_read_paths=[str(path.parent)], gpu_ids=ids
    )
    return train_verdict(outcome, dataset, recipe)
