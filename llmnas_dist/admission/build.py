"""The build verdict: does a program build a Net of the right output shape, finite, in budget?

`build_check` builds Net for a dataset's shape in the sandbox (the `build` task), forwards a
dummy batch and hands the run to `build_verdict`, which decides shape, NaN and size in the
parent (the program only reports its measurements) and returns a `BuildReport` or raises
CandidateRejected.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

from llmnas_dist.config import AdmissionConfig
from llmnas_dist.errors import CandidateRejected, ErrorClass, truncate
from llmnas_dist.program.lemur import program_prm
from llmnas_dist.program.source import parse_source
from llmnas_dist.sandbox.runner import SandboxLimits, run_in_sandbox

_FINGERPRINT = re.compile(r"[0-9a-f]{64}")
# A child whose forward calls what its parent's does, on the same shapes and alike-initialised
# parameters: it only makes modules it never calls (or changes nothing the network runs), so
# training it measures the parent again with other initial weights. In the default run of
# 2026-12-07 (2-core AVX512-BF16 Xeon) 3 of 14 evaluated children were such (two whole
# programs, one delta that added `self.pre_block` but no line calling it), scored -0.024,
# -0.004 and +0.012 against their parent: seed noise, and one of them entered E_2
SAME_FUNCTION = (
    "computes what its parent computes: its forward calls the same operations on the same "
    "shapes (a module it makes is never called)"
)


BUILD_BATCH = 2  # the dummy batch the build forwards (the verdict expects it back)


@dataclasses.dataclass(frozen=True)
class BuildReport:
    param_count: int
    output_shape: tuple[int, ...]
    duration_s: float
    # what the forward computes (sandbox.child.tasks.traced_forward); None if not reported
    function: str | None = None


def build_check(
    code: str, in_shape: Sequence[int], num_classes: int, cfg: AdmissionConfig
) -> BuildReport:
    """Build Net for a dataset of shape (C, H, W) and `num_classes` classes in the sandbox,
    forward a dummy batch of 2, and check the output; raises CandidateRejected. `prm` holds
    what the program's `supported_hyperparameters()` declares (llmnas_dist.program.lemur), and
    in_shape[0] is the batch the forward gets, as LEMUR gives it."""
    shape = tuple(in_shape)
    if len(shape) != 3 or not all(type(v) is int and v > 0 for v in shape):
        raise ValueError(f"in_shape must be (C, H, W) positive ints, got {in_shape!r}")
    if type(num_classes) is not int or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    try:
        tree = parse_source(code)
    except (SyntaxError, ValueError) as exc:
        raise CandidateRejected(ErrorClass.SYNTAX_ERROR, str(exc)) from None
    prm = program_prm(tree, batch=BUILD_BATCH, epochs=1, height=shape[1])
    payload = {"in_shape": [BUILD_BATCH, *shape], "num_classes": num_classes, "prm": prm}
    outcome = run_in_sandbox(code, "build", payload, SandboxLimits.from_admission(cfg))
    return build_verdict(outcome, num_classes, cfg.max_params)


def build_verdict(outcome: dict[str, Any], num_classes: int, max_params: int) -> BuildReport:
    """Judge a "build" run (the parent decides shape, NaN and size, not the program)."""
    if not outcome["ok"]:
        raise CandidateRejected(outcome["error_class"], outcome["message"])
    result = outcome["result"]
    param_count = result.get("param_count")
    output_shape = result.get("output_shape")
    if type(param_count) is not int or param_count < 0:
        raise CandidateRejected(ErrorClass.CRASHED, "malformed build result (param_count)")
    expected = [BUILD_BATCH, num_classes]
    if output_shape != expected:
        got = (
            output_shape
            if output_shape is not None
            else f"a {truncate(str(result.get('output_type')), 80)}"
        )
        raise CandidateRejected(
            ErrorClass.SHAPE_MISMATCH,
            f"forward returned {got}, expected a tensor of shape {expected}",
        )
    if result.get("finite") is not True:
        raise CandidateRejected(ErrorClass.NAN_OUTPUT, "forward returned NaN or inf values")
    if param_count > max_params:
        raise CandidateRejected(
            ErrorClass.TOO_LARGE, f"{param_count} parameters, over the budget of {max_params}"
        )
    function = result.get("function")
    if not (isinstance(function, str) and _FINGERPRINT.fullmatch(function)):
        function = None
    return BuildReport(param_count, tuple(expected), outcome["duration_s"], function)
