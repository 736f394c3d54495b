"""The proxy recipe in-process and through the sandbox's `train` task."""

from __future__ import annotations

import pytest
import torch

from llmnas_dist.config import EvaluationConfig
from llmnas_dist.evaluation.datasets import load_dataset
from llmnas_dist.evaluation.evaluate import evaluate_program, train_verdict
from llmnas_dist.evaluation.recipe import (
    Diverged,
    Recipe,
    augment_batch,
    seed_everything,
    train_proxy,
)
from llmnas_dist.sandbox.runner import SandboxLimits
from llmnas_dist.seeds import load_seeds

LIMITS = SandboxLimits(timeout_s=60.0, memory_mb=4096, cpu_time_s=61.0, threads=1)

SMALL_NET = """
import torch
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        c, h, w = in_shape[-3:]
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 32), nn.ReLU(),
                                  nn.Dropout(0.1), nn.Linear(32, out_shape[0]))

    def forward(self, x):
        return self.body(x)
"""


def _small_net(seed: int) -> torch.nn.Module:
    seed_everything(seed)
    return torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(64, 32),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.1),
        torch.nn.Linear(32, 10),
    )


def test_recipe_trains_and_is_deterministic_per_seed() -> None:
    tensors = load_dataset("digits", 0).tensors()
    runs = [train_proxy(_small_net(s), tensors, Recipe(seed=s, lr=3e-3)) for s in (1, 1, 2)]
    assert runs[0]["accuracy"] == runs[1]["accuracy"] and runs[0]["loss"] == runs[1]["loss"]
    assert runs[0]["loss"] != runs[2]["loss"]
    assert runs[0]["accuracy"] > 0.5  # 10 classes: chance is 0.1
    assert 0.9 < runs[0]["epochs_done"] <= 1.0
    assert runs[0]["samples_per_s"] > 0 and runs[0]["duration_s"] >= runs[0]["train_s"]


def test_fractional_epochs_and_time_budget() -> None:
    tensors = load_dataset("digits", 0).tensors()
    half = train_proxy(_small_net(0), tensors, Recipe(epochs=0.5))
    assert 0.4 < half["epochs_done"] < 0.6
    timed = train_proxy(_small_net(0), tensors, Recipe(epochs=None, budget_s=0.3))
    assert timed["steps"] >= 1 and timed["train_s"] < 5.0


def test_augmentation_keeps_shape_and_is_seeded() -> None:
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8)
    a = augment_batch(x, torch.Generator().manual_seed(3))
    b = augment_batch(x, torch.Generator().manual_seed(3))
    assert a.shape == x.shape and torch.equal(a, b)
    tensors = load_dataset("digits", 0).tensors()
    out = train_proxy(_small_net(0), tensors, Recipe(augment=True, optimizer="sgd", lr=0.05))
    assert out["accuracy"] > 0.3


def test_diverging_loss_raises_diverged() -> None:
    class Blows(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Linear(64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.w(x.flatten(1)) * float("inf")

    with pytest.raises(Diverged):
        train_proxy(Blows(), load_dataset("digits", 0).tensors(), Recipe())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"optimizer": "lion"},
        {"epochs": None},
        {"lr": -1.0},
        {"batch_size": 0},
        {"seed": -1},
        {"device": "tpu"},
        {"epochs": float("nan")},
    ],
)
def test_recipe_refuses_bad_values(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Recipe(**kwargs)


def test_recipe_from_config_overrides_budget() -> None:
    cfg = EvaluationConfig(epochs=2.0, batch_size=32, optimizer="sgd")
    r = Recipe.from_config(cfg, seed=4, budget_s=10.0)
    assert (r.epochs, r.budget_s, r.batch_size, r.optimizer, r.seed) == (None, 10.0, 32, "sgd", 4)
    with pytest.raises(ValueError):
        Recipe.from_config(cfg, epochs=1.0, budget_s=1.0)


def test_recipe_fingerprint_names_what_decides_a_score_besides_budget_and_seed() -> None:
    base = Recipe(seed=0, epochs=1.0)
    same = [Recipe(seed=3, epochs=1.0), Recipe(epochs=None, budget_s=5.0)]
    assert {r.fingerprint for r in same} == {base.fingerprint}
    other = [
        Recipe(lr=2e-3),
        Recipe(batch_size=32),
        Recipe(input_size=8),
        Recipe(augment=True),
        Recipe(optimizer="sgd"),
        Recipe(name="lemur"),
        Recipe(device="cuda:0"),
    ]
    prints = {r.fingerprint for r in other}
    assert len(prints) == len(other) and base.fingerprint not in prints
    # which GPU does not matter, that it is one does
    assert Recipe(device="cuda:1").fingerprint == Recipe(device="cuda:0").fingerprint


def test_sandboxed_training_matches_between_runs() -> None:
    recipe = Recipe(seed=7)
    a = evaluate_program(SMALL_NET, "digits", recipe, LIMITS)
    b = evaluate_program(SMALL_NET, "digits", recipe, LIMITS)
    assert a.ok, a.message
    assert a.accuracy == b.accuracy and a.params == 64 * 32 + 32 + 32 * 10 + 10
    assert a.budget == "epochs=1" and a.device == "cpu"


def test_seed_program_trains_in_the_sandbox() -> None:
    result = evaluate_program(load_seeds()["plain_cnn"], "digits", Recipe(), LIMITS)
    assert result.ok, result.message
    assert result.accuracy > 0.3


@pytest.mark.parametrize(
    ("body", "error_class"),
    [
        ("return self.body(x) * float('nan')", "nan_output"),
        ("while True:\n            pass", "timeout"),
        (
            "self.keep = [torch.ones(1 << 28) for _ in range(40)]\n        return self.body(x)",
            "out_of_memory",
        ),
        ("raise RuntimeError('boom')", "build_failed"),
    ],
)
def test_hostile_training_fails_with_a_reason(body: str, error_class: str) -> None:
    code = SMALL_NET.replace("return self.body(x)", body)
    limits = SandboxLimits(timeout_s=3.0, memory_mb=2048, cpu_time_s=4.0, threads=1)
    result = evaluate_program(code, "digits", Recipe(), limits)
    assert not result.ok
    assert result.error_class == error_class, result.message


def test_static_checks_run_before_training() -> None:
    result = evaluate_program("import subprocess\n" + SMALL_NET, "digits", Recipe(), LIMITS)
    assert (result.ok, result.error_class) == (False, "forbidden_import")


@pytest.mark.parametrize(
    "forged",
    [
        {"accuracy": 3.0},
        {"accuracy": float("nan")},
        {"params": "many"},
        {"diverged": "no"},
        {"loss": None},
    ],
)
def test_verdict_refuses_forged_results(forged: dict) -> None:
    good = {
        "accuracy": 0.5,
        "loss": 1.0,
        "epochs_done": 1.0,
        "samples_per_s": 10.0,
        "params": 5,
        "diverged": False,
        "device": "cpu",
    }
    outcome = {"ok": True, "result": {**good, **forged}, "duration_s": 1.0}
    verdict = train_verdict(outcome, "digits", Recipe())
    assert (verdict.ok, verdict.error_class) == (False, "crashed")
    assert train_verdict({**outcome, "result": good}, "digits", Recipe()).ok


def test_sandboxed_training_keeps_the_parents_simd_kernels() -> None:
    # A confined worker cannot read /proc and /sys; ATen must have chosen its kernels
    # before the fork, or training runs on scalar kernels at half the speed.
    from llmnas_dist.evaluation.datasets import dataset_file
    from llmnas_dist.sandbox.runner import run_in_sandbox

    path = dataset_file("digits", 0)
    payload = {
        "recipe": Recipe(epochs=0.1).to_payload(),
        "data_path": str(path),
        "num_classes": 10,
        "prm": {},
    }
    out = run_in_sandbox(SMALL_NET, "train", payload, LIMITS, extra_read_paths=[str(path.parent)])
    assert out["ok"], out
    assert out["result"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
