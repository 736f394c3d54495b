"""Mutation operators for the warm start: valid children, clean deltas, sandboxed builds."""

from __future__ import annotations

import random
import re

import pytest

from llmnas_dist.admission.delta import apply_output, make_delta
from llmnas_dist.admission.scopes import TAUGHT_ATTRIBUTES, misapplied_blocks
from llmnas_dist.config import AdmissionConfig
from llmnas_dist.evaluation.datasets import dataset_spec
from llmnas_dist.generation.mutations import (
    _ACTIVATION,
    DEFAULT_MAX_JACCARD,
    OPERATORS,
    REVERSIBLE,
    Mutation,
    mutate,
    novel_mutation,
    parent_jaccard,
    passes_static_checks,
    reverse,
    warm_start_pairs,
)
from llmnas_dist.generation.prompts import delta_answer
from llmnas_dist.program.source import parse_source
from llmnas_dist.seeds import load_seeds

SEEDS = load_seeds()


def _edit_limit(name: str, code: str) -> int:
    """Changed lines an operator's delta may hold: a few, or for `swap_all_activations` one
    out and one in per line that holds an activation."""
    if name == "swap_all_activations":
        return 2 * sum(bool(_ACTIVATION.search(line)) for line in code.splitlines())
    return 4


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
        assert (
            0 < sum(line[:1] in "+-" for line in diff.splitlines()[2:]) <= _edit_limit(name, code)
        )
        assert apply_output(code, delta_answer(diff)) == child
    assert applied >= 3, f"{name} applies to only {applied} seeds"


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_an_operator_adds_to_net_only_attributes_whole_programs_may_read(name):
    """The whole-program grammar lets Net's methods read the parent's attributes and
    TAUGHT_ATTRIBUTES (`admission.scopes.self_attributes`): what the warm start teaches
    must stay writable."""
    for code in SEEDS.values():
        child = OPERATORS[name](code, random.Random(1))
        if child is None:
            continue
        added = set(re.findall(r"self\.(\w+) =", child)) - set(re.findall(r"self\.(\w+)", code))
        assert added <= set(TAUGHT_ATTRIBUTES), (name, added)


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_every_block_an_operator_adds_is_applied_as_the_redraws_expect(name):
    """`misapplied_blocks` (a redraw fault) holds the statements the operators write."""
    for code in SEEDS.values():
        child = OPERATORS[name](code, random.Random(2))
        if child is not None:
            assert misapplied_blocks(parse_source(child)) == [], (name, make_delta(code, child))


def test_a_block_applied_as_another_one_is_misapplied():
    child = OPERATORS["add_residual_block"](SEEDS["resnet_basic"], random.Random(0))
    assert child is not None
    mixed = child.replace("x = x + self.pre_block(x)", "x = x * self.pre_block(x)")
    (line, why), *more = misapplied_blocks(parse_source(mixed))
    assert not more and mixed.splitlines()[line - 1].strip() == "x = x * self.pre_block(x)"
    assert "x = x + self.pre_block(x)" in why
    # an assignment before line `first` is not judged (a delta's lines judged before)
    assert misapplied_blocks(parse_source(mixed), first=line + 1) == []
    # a block the program makes is judged with `made_only`; one no line makes is not
    assert misapplied_blocks(parse_source(mixed), made_only=True) == [(line, why)]
    unmade = mixed.replace("self.pre_block = ", "self.other_block = ")
    assert len(misapplied_blocks(parse_source(unmade))) == 1
    assert misapplied_blocks(parse_source(unmade), made_only=True) == []


def test_swap_all_activations_leaves_one_kind_and_changes_only_activation_lines():
    code = SEEDS["se_resnet"]
    kinds = set()
    for i in range(6):
        child = OPERATORS["swap_all_activations"](code, random.Random(i))
        assert child is not None
        found = {
            m.group(0).split("(")[0].lower().removeprefix("nn.").removeprefix("f.")
            for m in _ACTIVATION.finditer(child)
        }
        assert "relu" not in found and len(found - {"leakyrelu", "elu"}) <= 1, found
        kinds |= found
        changed = [line for line in make_delta(code, child).splitlines()[2:] if line[:1] in "+-"]
        assert changed and all(_ACTIVATION.search(line) for line in changed)
    assert len(kinds) >= 2  # the kind is drawn, not fixed


def test_keep_resolution_turns_one_downsampling_step_off():
    code = SEEDS["plain_cnn"]
    child = OPERATORS["keep_resolution"](code, random.Random(0))
    assert child is not None and "nn.MaxPool2d(2)" not in child and "nn.Identity()" in child
    strided = OPERATORS["keep_resolution"](SEEDS["se_resnet"], random.Random(0))
    assert strided is not None and "stride = 1\n" in strided


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


def test_warm_start_pairs_are_seeded_distinct_novel_and_cover_operators():
    pairs = warm_start_pairs(SEEDS, 4, random.Random(3))
    assert pairs == warm_start_pairs(SEEDS, 4, random.Random(3))
    assert len(pairs) >= 3 * len(SEEDS)
    assert len({(p.parent, p.child) for p in pairs}) == len(pairs)
    steps = {step for p in pairs for step in p.operator.split("+")}
    assert len(steps & set(OPERATORS)) >= len(OPERATORS) - 2
    assert steps & set(REVERSIBLE.values())  # some reversed (remove/narrow)
    for p in pairs:
        assert p.parent != p.child and passes_static_checks(p.child)
        # far enough from the parent for admission's novelty test (tau 0.90)
        assert parent_jaccard(p.parent, p.child) < DEFAULT_MAX_JACCARD


def test_novel_mutation_stacks_operators_until_the_child_is_novel():
    code = SEEDS["resnet_basic"]
    for seed in range(10):
        m = novel_mutation(code, random.Random(seed))
        assert m is not None and m.parent == code
        names = m.operator.split("+")
        assert len(set(names)) == len(names) <= 3
        assert parent_jaccard(code, m.child) < DEFAULT_MAX_JACCARD
    # asked for an impossible distance it gives up instead of looping
    assert novel_mutation(code, random.Random(0), max_jaccard=0.05) is None
    with pytest.raises(ValueError, match="max_jaccard"):
        novel_mutation(code, random.Random(0), max_jaccard=0.0)


def test_single_operators_are_too_small_to_be_novel_but_blocks_come_close():
    """Why operators are stacked: one changed token is a near-copy under 7-token shingles."""
    code = SEEDS["resnet_basic"]
    swap = OPERATORS["swap_activation"](code, random.Random(0))
    assert swap is not None and parent_jaccard(code, swap) > 0.95
    block = OPERATORS["add_residual_block"](code, random.Random(0))
    assert block is not None and parent_jaccard(code, block) < 0.9


def test_reverse_swaps_parent_and_child_and_names_the_inverse_steps():
    m = Mutation("add_input_norm+swap_activation+widen_channels", "P", "C")
    assert reverse(m) == Mutation("narrow_channels+swap_activation+remove_input_norm", "C", "P")


def test_build_filter_drops_children_that_fail_it():
    calls = []

    def only_input_norm(child: str) -> bool:
        calls.append(child)
        return "self.input_norm" in child

    pairs = warm_start_pairs(
        {"plain_cnn": SEEDS["plain_cnn"]}, 3, random.Random(0), only_input_norm
    )
    assert calls and any("self.input_norm" not in child for child in calls)  # some dropped
    for p in pairs:
        grown = p.child if "remove_input_norm" not in p.operator else p.parent
        assert "self.input_norm" in grown


def test_a_sample_of_children_builds_in_the_sandbox():
    from llmnas_dist.admission.build import build_check

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
            ("vit_tiny", "add_input_gate"),
            ("wide_resnet", "mlp_head"),
            ("resnet_basic", "add_post_block"),
            ("se_resnet", "swap_all_activations"),
            ("plain_cnn", "keep_resolution"),
        ]
    ]
    for child in sample:
        assert child is not None
        report = build_check(child, spec.in_shape, spec.num_classes, cfg)
        assert report.param_count > 0


@pytest.mark.parametrize("op", ["add_residual_block", "add_post_block"])
def test_residual_blocks_keep_their_shape_whatever_kernel_the_model_writes(op):
    """The model copies a taught block and varies its kernel; with padding='same' every odd
    or even kernel still adds to its input (with a numeric padding, kernel 5 with padding 1
    failed the build)."""
    from llmnas_dist.admission.build import build_check

    spec = dataset_spec("mnist5k").at_size(8)
    child = OPERATORS[op](SEEDS["resnet_basic"], random.Random(3))
    assert child is not None and "padding='same'" in child
    block = next(line for line in child.splitlines() if "padding='same'" in line)
    for kernel in (1, 2, 3, 5, 7):
        varied = child.replace(
            block, re.sub(r", \d, padding='same'", f", {kernel}, padding='same'", block)
        )
        assert varied != child or f", {kernel}, padding" in block
        report = build_check(varied, spec.in_shape, spec.num_classes, AdmissionConfig())
        assert report.param_count > 0


def test_a_second_generation_adds_another_block_to_a_child_of_the_same_seed():
    """From cycle 2 on, parents are children that hold a taught block: a share of the
    pairs teaches adding a different block to such a child, never the same one again."""
    from llmnas_dist.generation.mutations import BLOCK_OPERATORS

    seeds = {name: SEEDS[name] for name in ("plain_cnn", "resnet_basic")}
    first = warm_start_pairs(
        seeds, 6, random.Random(1), reverse_fraction=0.0, operators=BLOCK_OPERATORS
    )
    assert first == warm_start_pairs(
        seeds,
        6,
        random.Random(1),
        reverse_fraction=0.0,
        operators=BLOCK_OPERATORS,
        second_fraction=0.0,
    )
    assert all(p.parent in seeds.values() for p in first)
    pairs = warm_start_pairs(
        seeds,
        6,
        random.Random(1),
        reverse_fraction=0.0,
        operators=BLOCK_OPERATORS,
        second_fraction=0.5,
    )
    children = {p.child for p in pairs}
    second = [p for p in pairs if p.parent not in seeds.values()]
    assert second and all(p.parent in children for p in second)
    blocks = ("self.pre_block", "self.input_gate", "self.post_block")
    for p in second:
        held = [b for b in blocks if b in p.parent]
        assert all(p.child.count(b) == p.parent.count(b) for b in held)  # none added twice
        assert parent_jaccard(p.parent, p.child) < DEFAULT_MAX_JACCARD
    with pytest.raises(ValueError, match="second_fraction"):
        warm_start_pairs(seeds, 1, random.Random(1), second_fraction=1.5)
