"""Reads of names before any line binds them (admission/unbound.py): the faults a whole
program's line is redrawn for. No shipped seed has one; each rule of the module doc is
held by a program that breaks it and one that keeps it."""

from __future__ import annotations

import ast

import pytest

from llmnas_dist.admission.unbound import unbound_reads
from llmnas_dist.seeds import load_seeds


def reads(code: str, first_line: int = 1) -> list[tuple[int, str]]:
    return unbound_reads(ast.parse(code), first_line)


@pytest.mark.parametrize("name", sorted(load_seeds()))
def test_no_seed_reads_a_name_before_binding_it(name: str) -> None:
    assert reads(load_seeds()[name]) == []


BLOCK = "class Block:\n    def __init__(self, c_in, c_out):\n        self.c = c_out\n"


def test_a_local_of_another_function_is_unbound_where_it_is_read() -> None:
    """The default run's `NameError: name 'c_out'`: a block's parameter read in Net."""
    code = BLOCK + "def net(c_in):\n    x = Block(c_in, c_out)\n    return x\n"
    assert reads(code) == [(5, "c_out")]


def test_a_local_read_before_its_binding_is_unbound_and_after_it_is_not() -> None:
    code = "def net(shape):\n    c = width * 2\n    height, width = shape\n    d = width\n"
    assert reads(code) == [(2, "width")]


def test_an_assignment_binds_only_after_its_statement() -> None:
    assert reads("def f():\n    x = x + 1\n") == [(2, "x")]
    assert reads("def f(x):\n    x = x + 1\n") == []


def test_a_loop_target_binds_its_body_and_a_later_binding_in_a_loop_its_next_pass() -> None:
    code = (
        "def f(xs):\n"
        "    prev = None\n"
        "    for i in xs:\n"
        "        if i:\n"
        "            y = last\n"  # bound below, inside the same loop: the previous pass
        "        last = i\n"
        "    return y\n"
    )
    assert reads(code) == []
    outside = "def f(xs):\n    y = last\n    for i in xs:\n        last = i\n"
    assert reads(outside) == [(2, "last")]


def test_comprehensions_bind_their_targets_and_read_their_function_where_written() -> None:
    assert reads("def f(n):\n    return [k * n for k in range(n)]\n") == []
    code = "def f(n):\n    z = [q for _ in range(n)]\n    q = 1\n"
    assert reads(code) == [(2, "q")]


def test_module_names_builtins_enclosing_functions_and_globals_are_bound() -> None:
    code = (
        "WIDTH = 4\n"
        "def g(a):\n    b = a\n    return b\n"
        "def f(n):\n"
        "    global b\n"
        "    x = WIDTH + len(range(n)) + b\n"
        "    def inner():\n        return n + a_later\n"
        "    a_later = 1\n"
        "    return Later(x)\n"  # a class further down: read at call time
        "class Later:\n    pass\n"
    )
    assert reads(code) == []


def test_a_name_no_function_binds_is_left_alone() -> None:
    """It may be a module-level name the model writes further down."""
    assert reads("def f():\n    return helper_below()\n") == []


def test_only_reads_from_first_line_on_are_reported() -> None:
    code = BLOCK + "def net(c_in):\n    x = Block(c_in, c_out)\n    y = c_out\n"
    assert reads(code, first_line=6) == [(6, "c_out")]


def test_default_arguments_and_methods_see_the_module_not_the_class_body() -> None:
    code = (
        "class A:\n"
        "    expansion = 4\n"
        "    def __init__(self, w, k=3):\n"
        "        self.w = w * self.expansion + k\n"
    )
    assert reads(code) == []


NET = (
    "import torch.nn as nn\n"
    "class Base(nn.Module):\n"
    "    def __init__(self):\n"
    "        super().__init__()\n"
    "        self.stem = nn.Identity()\n"
    "class Net(Base):\n"
    "    width = 4\n"
    "    def __init__(self):\n"
    "        super().__init__()\n"
    "        self.head = nn.Identity()\n"
    "    def forward(self, x):\n"
    "        x = self.stem(x) * self.width\n"  # made by the base class; a class attribute
    "        x = self.helper(self.head(x)) if self.training else x\n"
    "        return self.norm(x)\n"  # never made
    "    def helper(self, x):\n"
    "        return x\n"
)


def test_an_attribute_no_line_makes_is_found_and_made_ones_are_not() -> None:
    from llmnas_dist.admission.unbound import unmade_attributes

    assert unmade_attributes(ast.parse(NET)) == [(14, "self.norm")]
    assert unmade_attributes(ast.parse(NET), first_line=15) == []


def test_a_class_with_a_base_the_program_does_not_define_is_not_judged() -> None:
    from llmnas_dist.admission.unbound import unmade_attributes

    code = NET.replace("class Base(nn.Module):", "class Base(SomethingElse):")
    assert unmade_attributes(ast.parse(code)) == []


@pytest.mark.parametrize("name", sorted(load_seeds()))
def test_no_seed_reads_an_attribute_it_does_not_make(name: str) -> None:
    from llmnas_dist.admission.unbound import unmade_attributes

    assert unmade_attributes(ast.parse(load_seeds()[name])) == []


def test_a_complete_program_has_every_name_judged() -> None:
    """A delta applied to its parent leaves no module-level name to come."""
    code = "import torch.nn as nn\ndef f(x):\n    return xBatchNorm(nn.ReLU()(x))\n"
    assert reads(code) == []
    assert unbound_reads(ast.parse(code), complete=True) == [(3, "xBatchNorm")]
