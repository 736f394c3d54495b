"""A child that computes what its parent computes: the build's fingerprint of the forward
(sandbox.child.tasks.traced_forward), admission's `same_function` and the decoder's end-tag
check (`LineJudge.end_fault`). Real sandboxed builds."""

from __future__ import annotations

import pytest

from llmnas_dist.admission.build import SAME_FUNCTION, BuildReport, build_check
from llmnas_dist.admission.finished import AnswerTarget
from llmnas_dist.admission.partial import LineJudge
from llmnas_dist.admission.pipeline import Admission
from llmnas_dist.config import AdmissionConfig
from llmnas_dist.errors import ErrorClass
from llmnas_dist.evaluation.datasets import dataset_spec
from llmnas_dist.seeds import load_seeds

CFG = AdmissionConfig()
SHAPE = (1, 8, 8)
PARENT = load_seeds()["plain_cnn"]
SUPER = "        super().__init__()\n"
# modules made and never called: enough text that the child is novel by Jaccard
DEAD = (
    "        self.input_norm = nn.BatchNorm2d(in_shape[-3])\n"
    "        self.pre_block = nn.Sequential(nn.Conv2d(in_shape[-3], 16, 3, padding='same'), "
    "nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, in_shape[-3], 1))\n"
    "        self.input_gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_shape[-3], "
    "8, 1), nn.ReLU(), nn.Conv2d(8, in_shape[-3], 1), nn.Sigmoid())\n"
)
FORWARD = "        x = self.pool(self.features(x))\n"


def function_of(code: str) -> str | None:
    return build_check(code, SHAPE, 10, CFG).function


def test_modules_never_called_leave_the_fingerprint_as_it_was() -> None:
    parent = function_of(PARENT)
    assert parent is not None and len(parent) == 64
    assert function_of(PARENT.replace(SUPER, SUPER + DEAD)) == parent
    # the extra draws shift every later layer's initial weights: still the same function
    spare = PARENT.replace(SUPER, SUPER + "        self.spare = nn.Linear(7, 7)\n")
    assert function_of(spare) == parent
    assert function_of(PARENT) == parent  # and two builds of one program agree


@pytest.mark.parametrize(
    "old, new",
    [
        ("nn.ReLU(inplace=True)", "nn.GELU()"),  # another operation
        ("nn.MaxPool2d(2)", "nn.AvgPool2d(2)"),
        ("c_out = 32 * 2**i", "c_out = 24 * 2**i"),  # other shapes
        ("nn.Dropout(dropout)", "nn.Dropout(0.3)"),  # another scalar
    ],
)
def test_a_change_the_forward_runs_changes_the_fingerprint(old: str, new: str) -> None:
    assert old in PARENT
    assert function_of(PARENT.replace(old, new)) != function_of(PARENT)


def test_the_same_computation_written_otherwise_is_the_same_function() -> None:
    old = "nn.Conv2d(c_in, c_out, 3, padding=1"
    assert old in PARENT
    stride = PARENT.replace(old, "nn.Conv2d(c_in, c_out, 3, stride=1, padding=1")
    assert function_of(stride) == function_of(PARENT)


def test_another_initialisation_is_another_function() -> None:
    """Initial weights decide a short training: a zero-initialised head or kaiming-normal
    convolutions make a different program, though they call what the parent calls."""
    parent = function_of(PARENT)
    zero_head = PARENT.replace(
        "nn.Linear(c_in, out_shape[0]))\n",
        "nn.Linear(c_in, out_shape[0]))\n        nn.init.zeros_(self.head[1].weight)\n",
    )
    kaiming = PARENT.replace(
        "nn.Linear(c_in, out_shape[0]))\n",
        "nn.Linear(c_in, out_shape[0]))\n"
        "        for m in self.features:\n"
        "            if isinstance(m, nn.Conv2d):\n"
        "                nn.init.kaiming_normal_(m.weight, nonlinearity='relu')\n",
    )
    assert zero_head != PARENT and kaiming != PARENT
    assert function_of(zero_head) != parent
    assert function_of(kaiming) != parent


def test_admission_rejects_a_child_that_computes_its_parent_s_function() -> None:
    admission = Admission(CFG, dataset_spec("digits"))
    dead = PARENT.replace(SUPER, SUPER + DEAD)
    verdict = admission.admit_program(dead, parent=PARENT)
    assert not verdict.admitted and verdict.error_class is ErrorClass.NOT_NOVEL
    assert verdict.message == SAME_FUNCTION
    assert verdict.code_hash not in admission.index  # not taken into the novelty index
    used = dead.replace(FORWARD, "        x = self.input_norm(x)\n" + FORWARD)
    assert admission.admit_program(used, parent=PARENT).admitted
    # judged against its parent only: as a program of its own it is admitted
    assert Admission(CFG, dataset_spec("digits")).admit_program(dead).admitted


def test_a_delta_that_only_makes_a_module_goes_on_from_its_end_tag() -> None:
    """The decoder's end-tag check: a delta that made a block and wrote no line calling it
    is a 'novelty' fault on its end tag's line (it goes on, and can write that call)."""
    target = AnswerTarget(SHAPE, 10, CFG)
    hunk = "".join("+" + line + "\n" for line in DEAD.splitlines())
    answer = (
        "<delta>\n--- baseline.py\n+++ improved.py\n@@ @@\n"
        f"         super().__init__()\n{hunk}</delta>"
    )
    fault = LineJudge(PARENT, target).end_fault(answer)
    assert fault is not None and fault.kind == "novelty" and fault.why == SAME_FUNCTION
    assert fault.line == len(answer.split("\n"))
    calling = answer.replace(
        "</delta>",
        "@@ @@\n     def forward(self, x):\n+        x = self.input_norm(x)\n</delta>",
    )
    assert LineJudge(PARENT, target).end_fault(calling) is None
    built = target.build(PARENT)
    assert isinstance(built, BuildReport) and built.function is not None
