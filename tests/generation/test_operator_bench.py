"""bench/operator_bench.py's pieces: the children an operator makes, and the paired effect
of child minus parent per operator."""

from __future__ import annotations

import random

import pytest
from fixtures import load_bench

from llmnas_dist.seeds import load_seeds

ob = load_bench("operator_bench")


def test_children_are_distinct_made_by_the_operator_alone_and_kept_only_where_they_build():
    parent = load_seeds()["plain_cnn"]
    kids = ob.children_of(parent, "add_residual_block", 2, random.Random(0), lambda c: True)
    assert len(kids) == 2 and len(set(kids)) == 2
    assert all("self.pre_block" in k and "self.post_block" not in k for k in kids)
    assert ob.children_of(parent, "add_residual_block", 2, random.Random(0), lambda c: False) == []
    once = ob.children_of(kids[0], "add_residual_block", 2, random.Random(0), lambda c: True)
    assert once == []  # the operator does not apply twice


def test_effects_pair_each_child_with_its_parent_and_leave_failures_out():
    parents = {"a": 0.80, "b": 0.60, "c": None}
    rows = [
        {"parent": "a", "operator": "x", "score": 0.85},
        {"parent": "b", "operator": "x", "score": 0.62},
        {"parent": "a", "operator": "y", "score": 0.70},
        {"parent": "a", "operator": "y", "score": None},  # its training failed
        {"parent": "c", "operator": "y", "score": 0.90},  # its parent's failed
    ]
    effects = ob.paired_effects(parents, rows)
    assert effects["x"]["n"] == 2 and effects["x"]["above_parent"] == 2
    assert effects["x"]["mean_diff"] == pytest.approx(0.035)
    assert effects["x"]["se"] == pytest.approx(0.015)
    assert effects["y"] == {"n": 1, "mean_diff": pytest.approx(-0.1), "se": None, "above_parent": 0}
