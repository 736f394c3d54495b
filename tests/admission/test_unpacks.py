"""`in_shape` unpacked into a number of names it does not hold (admission/unpacks.py)."""

from __future__ import annotations

import pytest

from llmnas_dist.admission.partial import LineJudge
from llmnas_dist.admission.unpacks import misfit_unpacks
from llmnas_dist.program.source import parse_source
from llmnas_dist.seeds import load_seeds

NET = (
    "class Net:\n"
    "    def __init__(self, in_shape, out_shape, prm, device):\n"
    "        {line}\n"
    "        self.x = 1\n"
)


@pytest.mark.parametrize(
    "line, misfit",
    [
        ("channels, height, width = in_shape", True),  # the model's: 4 values, 3 names
        ("channels, height, width = in_shape[-3:]", False),  # the seeds'
        ("batch, channels, height, width = in_shape", False),
        ("height, width = in_shape[-2:]", False),
        ("height, width = in_shape[1:]", True),  # 3 values
        ("[c, h, w] = in_shape[::2]", True),  # 2 values
        ("c, *rest = in_shape", False),  # a starred target takes the rest
        ("c = in_shape", False),  # not an unpacking
        ("c, h, w = in_shape[k:]", False),  # a bound not known here
        ("c, h, w = shape", False),  # another name
    ],
)
def test_an_unpacking_of_in_shape_is_judged_by_the_values_it_holds(line: str, misfit: bool):
    found = misfit_unpacks(parse_source(NET.format(line=line)))
    assert bool(found) == misfit
    if misfit:
        assert found[0][0] == 3 and "in_shape" in found[0][1]


def test_a_net_that_binds_in_shape_again_is_not_judged() -> None:
    code = NET.format(line="in_shape = (3, 8, 8)\n        c, h, w = in_shape")
    assert misfit_unpacks(parse_source(code)) == []


def test_only_net_s_init_and_lines_from_the_first_judged_are_judged() -> None:
    other = NET.replace("class Net:", "class Block:").format(line="c, h, w = in_shape")
    assert misfit_unpacks(parse_source(other)) == []
    code = NET.format(line="c, h, w = in_shape")
    assert misfit_unpacks(parse_source(code), first_line=4) == []


def test_no_shipped_seed_unpacks_in_shape_misfit() -> None:
    for name, code in load_seeds().items():
        assert misfit_unpacks(parse_source(code)) == [], name


def test_a_whole_program_s_misfit_unpack_is_a_line_fault() -> None:
    """Written by a whole program, judged at the end of its line (kind 'unpack')."""
    answer = "<nn>\n" + NET.format(line="channels, height, width = in_shape")
    fault = LineJudge().fault(answer)
    assert fault is not None and fault.kind == "unpack" and fault.line == 4
