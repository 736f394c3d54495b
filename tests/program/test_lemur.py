"""LEMUR's programs as they are: prm from supported_hyperparameters(), the batch in
in_shape[0], inputs resized for programs built for large images, LEMUR's own recipe."""

from __future__ import annotations

import ast
import json

import pytest

from llmnas_dist.admission.pipeline import Admission
from llmnas_dist.config import AdmissionConfig, EvaluationConfig
from llmnas_dist.errors import CandidateRejected, ErrorClass
from llmnas_dist.evaluation.datasets import dataset_spec
from llmnas_dist.evaluation.evaluate import evaluate_program
from llmnas_dist.evaluation.recipe import Recipe
from llmnas_dist.program.lemur import LEMUR_PRM, declared_hyperparameters, program_prm
from llmnas_dist.sandbox.runner import SandboxLimits

LIMITS = SandboxLimits.from_evaluation(EvaluationConfig(timeout_s=120))

# Written here in LEMUR's style (its files stay out of this project): a module-level
# supported_hyperparameters(), prm read in __init__, the batch read from in_shape[0], a
# forward parameter called `input`, a DataLoader annotation, its own trainer.
LEMUR_PROGRAM = """
import math
import random
from functools import reduce

import numpy as np
import torch
import torch.nn as nn


def supported_hyperparameters():
    return {'lr', 'momentum', 'dropout', 'stochastic_depth_prob'}


class Net(nn.Module):
    def __init__(self, in_shape: tuple, out_shape: tuple, prm: dict, device: torch.device):
        super().__init__()
        self.device = device
        self.batch = in_shape[0]
        self.side = in_shape[2]
        channels = reduce(lambda a, b: a * b, [1, 2, 4]) * 2
        self.features = nn.Sequential(
            nn.Conv2d(in_shape[1], channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Dropout(prm['dropout'] * (1.0 - prm['stochastic_depth_prob'])),
        )
        width = int(np.prod([channels, in_shape[2] // 2, in_shape[3] // 2]))
        self.fc = nn.Linear(width, out_shape[0])

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.shape[-1] != self.side:
            raise ValueError(f"built for {self.side} px, got {input.shape[-1]} px")
        return self.fc(torch.flatten(self.features(input), 1))

    def train_setup(self, prm):
        self.to(self.device)
        self.criteria = (nn.CrossEntropyLoss().to(self.device),)
        self.optimizer = torch.optim.SGD(self.parameters(), lr=prm['lr'], momentum=prm['momentum'])
        self.seen = 0

    def learn(self, train_data: torch.utils.data.DataLoader) -> None:
        self.train()
        for inputs, labels in train_data:
            inputs, labels = inputs.to(self.device), labels.to(self.device)
            self.optimizer.zero_grad()
            loss = self.criteria[0](self(inputs), labels)
            loss.backward()
            nn.utils.clip_grad_norm_(self.parameters(), 3)
            self.optimizer.step()
            self.seen += inputs.shape[0]
"""


def tree_of(code: str) -> ast.Module:
    return ast.parse(code)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("return {'lr', 'momentum'}", {"lr", "momentum"}),
        ("return ['lr', 'dropout']", {"lr", "dropout"}),
        ("return {'lr': 1, 'momentum': 2}", {"lr", "momentum"}),
        ("return set(['lr'])", None),  # computed: unknown, every known key is supplied
        ("x = 1\n    return {'lr', x}", None),
    ],
)
def test_declared_hyperparameters(body: str, expected: set[str] | None) -> None:
    declared = declared_hyperparameters(tree_of(f"def supported_hyperparameters():\n    {body}\n"))
    assert declared == (frozenset(expected) if expected is not None else None)


def test_prm_holds_the_declared_keys_and_the_trainers() -> None:
    prm = program_prm(tree_of(LEMUR_PROGRAM), batch=64, epochs=1.0, height=32)
    assert set(prm) == set(LEMUR_PRM) | {"batch", "epoch", "transform"}
    assert prm["batch"] == 64 and prm["transform"] == "norm_32"
    assert prm["stochastic_depth_prob"] == LEMUR_PRM["stochastic_depth_prob"]
    undeclared = program_prm(tree_of("x = 1\n"), batch=2, epochs=1.0, height=8)
    assert set(LEMUR_PRM) <= set(undeclared)


def with_key(key: str, read: bool) -> str:
    """LEMUR_PROGRAM declaring one more key, which __init__ reads or not."""
    code = LEMUR_PROGRAM.replace("'stochastic_depth_prob'}", f"'stochastic_depth_prob', '{key}'}}")
    if read:
        code = code.replace(
            "self.side = in_shape[2]", f"self.side = in_shape[2] + 0 * prm['{key}']"
        )
    return code


def test_a_declaration_as_a_dict_gives_its_own_numbers() -> None:
    code = "def supported_hyperparameters():\n"
    code += "    return {'lr': 0.005, 'warp': 0.3, 'momentum': 'x', 'dropout': 7}\n"
    code += "def f(prm):\n    return prm['warp'] * prm['lr'] * prm['momentum']\n"
    prm = program_prm(tree_of(code), batch=2, epochs=1.0, height=8)
    assert prm["lr"] == 0.005 and prm["warp"] == 0.3  # read, but the program gave it a value
    assert prm["momentum"] == LEMUR_PRM["momentum"]  # not a number: LEMUR's usual value
    assert prm["dropout"] == LEMUR_PRM["dropout"]  # outside LEMUR's [0, 1]


def test_a_key_without_a_value_is_rejected_by_name_when_read() -> None:
    with pytest.raises(CandidateRejected) as info:
        program_prm(tree_of(with_key("warp", read=True)), batch=2, epochs=1.0, height=8)
    assert info.value.error_class is ErrorClass.CONTRACT_VIOLATION
    assert "'warp'" in info.value.message
    # declared but never read (LEMUR's AirNext declares batch_size): LEMUR's mid-range value
    prm = program_prm(tree_of(with_key("lr_schedule", read=False)), batch=2, epochs=1.0, height=8)
    assert prm["lr_schedule"] == 0.5


def test_lemur_program_is_admitted_at_the_resized_shape() -> None:
    spec = dataset_spec("digits").at_size(32)
    verdict = Admission(AdmissionConfig(), spec).admit_program(LEMUR_PROGRAM)
    assert verdict.admitted, verdict.message
    # built for 32 px: its width is 16 * 16 * 16 inputs to fc (+ conv), not 16 * 4 * 4
    assert verdict.param_count == 16 * 9 + 16 + 16 * 16 * 16 * 10 + 10
    rejected = Admission(AdmissionConfig(), spec).admit_program(with_key("w", read=True))
    assert rejected.error_class is ErrorClass.CONTRACT_VIOLATION and "'w'" in rejected.message
    assert Admission(AdmissionConfig(), spec).admit_program(with_key("w", read=False)).admitted


@pytest.mark.parametrize("name", ["fixed", "lemur"])
def test_lemur_program_trains_at_the_resized_shape_by_either_recipe(name: str) -> None:
    recipe = Recipe(epochs=1.0, input_size=16, name=name)
    result = evaluate_program(LEMUR_PROGRAM, "digits", recipe, LIMITS)
    assert result.ok, result.message
    assert result.accuracy is not None and result.accuracy > 0.5  # chance is 0.1
    assert result.epochs_done == pytest.approx(1.0, abs=0.05)


def test_lemur_recipe_is_deterministic_and_differs_from_the_fixed_one() -> None:
    runs = [
        evaluate_program(LEMUR_PROGRAM, "digits", Recipe(input_size=16, name=n), LIMITS)
        for n in ("lemur", "lemur", "fixed")
    ]
    assert runs[0].accuracy == runs[1].accuracy
    assert runs[0].accuracy != runs[2].accuracy  # SGD at the program's lr, not AdamW


def test_lemur_recipe_needs_the_programs_trainer() -> None:
    code = LEMUR_PROGRAM.replace("def learn(", "def learn_later(")
    result = evaluate_program(code, "digits", Recipe(input_size=16, name="lemur"), LIMITS)
    assert not result.ok and result.error_class == "contract_violation"
    assert "learn" in result.message


def test_a_program_for_large_inputs_fails_without_the_resize() -> None:
    code = LEMUR_PROGRAM.replace("if input.shape[-1] != self.side:", "if input.shape[-1] < 16:")
    result = evaluate_program(code, "digits", Recipe(), LIMITS)
    assert not result.ok  # 8 px: the ValueError of its forward
    assert evaluate_program(code, "digits", Recipe(input_size=16), LIMITS).ok


@pytest.mark.parametrize("size", [0, 3, 2000, 16.5])
def test_input_size_out_of_range_is_refused(size: object) -> None:
    with pytest.raises(ValueError, match="input_size"):
        Recipe(input_size=size)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Recipe(name="theirs")


def test_recipe_and_input_size_come_from_the_evaluation_section() -> None:
    recipe = Recipe.from_config(EvaluationConfig(recipe="lemur", input_size=16), seed=3)
    assert (recipe.name, recipe.input_size, recipe.seed) == ("lemur", 16, 3)
    with pytest.raises(ValueError):
        EvaluationConfig(recipe="theirs")  # type: ignore[arg-type]


def test_eval_cli_trains_by_the_programs_own_recipe(tmp_path, monkeypatch, capsys) -> None:
    from llmnas_dist.cli.main import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "lemur_net.py").write_text(LEMUR_PROGRAM)
    argv = ["eval", "lemur_net.py", "--recipe", "lemur", "--input-size", "16", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is True and out["accuracy"] > 0.5
    assert main(["eval", "lemur_net.py", "--input-size", "2"]) == 2  # out of range: usage
