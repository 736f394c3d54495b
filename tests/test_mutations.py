"""Mutation operators for the warm start: valid children, clean deltas, sandboxed builds."""

from __future__ import annotations

import random

import pytest

from llmnas_dist.config import AdmissionConfig
from llmnas_dist.datasets import dataset_spec
from llmnas_dist.delta import apply_output, make_delta
from llmnas_dist.mutations import (
    OPERATORS,
    REVERSIBLE,
    mutate,
    passes_static_checks,
    warm_start_pairs,
)
from llmnas_dist.prompts import delta_answer
from llmnas_dist.seeds import load_seeds

SEEDS = load_seeds()


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_operator_children_pass_static_checks_and_round_trip_as_deltas(name):
    applied = 0
    for code in SEEDS.values():
        child = OPERATORS[name](code, random.Random(1))
        if child is None:
            continue
        applied += 1
        assert child != code
        assert passes_static_checks(child), (name, make_delta(code, child))
        diff = make_delta(code, child)
        assert 0 < sum(line[:1] in "+-" for line in diff.splitlines()[2:]) <= 4  # a small edit
        assert apply_output(code, delta_answer(diff)) == child
    assert applied >= 3, f"{name} applies to only {applied} seeds"


def test_operators_that_cannot_apply_return_none():
    bare = "import torch.nn as nn\n\nclass Net(nn.Module):\n    pass\n"
    for op in OPERATORS.values():
        assert op(bare, random.Random(0)) is None
    assert mutate(bare, random.Random(0)) is None


def test_blocks_are_not_added_twice():
    code = SEEDS["plain_cnn"]
    once = OPERATORS["add_input_norm"](code, random.Random(0))
    assert once is not None and OPERATORS["add_input_norm"](once, random.Random(0)) is None


def test_mutate_rejects_unknown_operator():
    with pytest.raises(ValueError, match="unknown mutation operators"):
        mutate(SEEDS["plain_cnn"], random.Random(0), ["teleport"])


def test_warm_start_pairs_are_seeded_distinct_and_cover_operators():
    pairs = warm_start_pairs(SEEDS, 4, random.Random(3))
    assert pairs == warm_start_pairs(SEEDS, 4, random.Random(3))
    assert len(pairs) >= 3 * len(SEEDS)
    assert len({(p.parent, p.child) for p in pairs}) == len(pairs)
    ops = {p.operator for p in pairs}
    assert len(ops) >= 6 and ops & set(REVERSIBLE.values())  # some reversed (remove/narrow)
    for p in pairs:
        assert p.parent != p.child and passes_static_checks(p.child)


def test_build_filter_drops_children_that_fail_it():
    calls = []

    def only_input_norm(child: str) -> bool:
        calls.append(child)
        return "self.input_norm" in child

    pairs = warm_start_pairs(
        {"plain_cnn": SEEDS["plain_cnn"]}, 3, random.Random(0), only_input_norm
    )
    assert calls and all(
        "self.input_norm" in (p.child if not p.operator.startswith("remove") else p.parent)
        for p in pairs
    )


def test_a_sample_of_children_builds_in_the_sandbox():
    from llmnas_dist.sandbox import build_check

    spec = dataset_spec("digits")
    cfg = AdmissionConfig()
    rng = random.Random(5)
    sample = [
        OPERATORS[op](SEEDS[seed], rng)
        for seed, op in [
            ("plain_cnn", "add_residual_block"),
            ("resnet_basic", "change_kernel_size"),
            ("vgg_small", "widen_channels"),
            ("mobilenet_v2", "add_input_norm"),
            ("convnext_tiny", "swap_activation"),
        ]
    ]
    for child in sample:
        assert child is not None
        report = build_check(child, spec.in_shape, spec.num_classes, cfg)
        assert report.param_count > 0
