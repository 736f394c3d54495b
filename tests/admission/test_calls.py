"""Calls whose arguments cannot bind to their callee (admission/calls.py): judged against
torch's own signatures and the program's own definitions; never a seed's call."""

from __future__ import annotations

import ast

import pytest
import torch.nn  # noqa: F401  (the judge reads only modules already imported)

from llmnas_dist.admission.calls import misfit_calls
from llmnas_dist.seeds import load_seeds

HEAD = "import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n"


def misfits(body: str) -> list[tuple[int, str]]:
    return misfit_calls(ast.parse(HEAD + body))


@pytest.mark.parametrize("name", sorted(load_seeds()))
def test_no_seed_call_is_a_misfit(name: str) -> None:
    assert misfit_calls(ast.parse(load_seeds()[name])) == []


@pytest.mark.parametrize(
    "call, why",
    [
        ("nn.Conv2d(3, 8, 3, sideset_dim=1)", "unexpected keyword argument 'sideset_dim'"),
        ("nn.Conv2d(3, 8)", "missing a required argument: 'kernel_size'"),
        ("nn.Linear(3, 8, True, None, None, 7)", "too many positional arguments"),
        ("F.relu(x, inplace=True, foo=1)", "unexpected keyword argument 'foo'"),
        ("torch.nn.BatchNorm2d(num_feature=8)", "missing a required argument: 'num_features'"),
    ],
)
def test_torch_callables_are_judged_by_their_signatures(call: str, why: str) -> None:
    found = misfits(f"y = {call}\n")
    assert len(found) == 1 and found[0][0] == 4 and why in found[0][1]


def test_fitting_calls_and_unpacked_arguments_are_not_misfits() -> None:
    body = (
        "a = nn.Conv2d(3, 8, 3, padding='same', bias=False)\n"
        "b = nn.Sequential(nn.ReLU(), nn.Linear(8, 2))\n"
        "c = nn.Conv2d(*args)\n"
        "d = nn.Linear(**kw)\n"
        "e = F.adaptive_avg_pool2d(x, 1)\n"
    )
    assert misfits(body) == []


def test_the_program_s_own_classes_and_functions_are_judged_after_their_definition() -> None:
    body = (
        "y = Block(1, 2, 3, 4)\n"  # before its definition: not judged
        "class Block(nn.Module):\n"
        "    def __init__(self, c_in, c_out, *, stride=1):\n"
        "        super().__init__()\n"
        "def make(n, k=2):\n"
        "    return Block(n, n, 3)\n"  # stride is keyword-only
        "z = Block(1, stride=2)\n"
        "w = make(1, 2, 3)\n"
        "v = Block(1, 2, stride=2)\n"
    )
    lines = [line for line, _ in misfits(body)]
    assert lines == [9, 10, 11]


def test_names_outside_the_judged_modules_are_not_looked_up() -> None:
    """Only torch, torch.nn and torch.nn.functional, through the program's own imports; an
    attribute that is not in the module's dictionary is not judged (no lookup runs)."""
    code = "import os\nimport torch.nn as nn\ny = os.system(1, 2, 3)\nz = nn.NoSuchLayer(1)\n"
    assert misfit_calls(ast.parse(code)) == []
