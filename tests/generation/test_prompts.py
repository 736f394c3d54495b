"""Prompt templates: shipped as files, filled strictly, answers round-trip through the codec."""

from __future__ import annotations

import random

import pytest

from llmnas_dist.admission.delta import apply_output, extract_code, make_delta
from llmnas_dist.evaluation.datasets import dataset_spec
from llmnas_dist.generation.prompts import (
    TEMPLATES,
    choose_modes,
    delta_answer,
    full_answer,
    load_template,
    parent_prompt,
    render,
    retry_prompt,
    training_delta,
)
from llmnas_dist.seeds import load_seeds

PARENT = load_seeds()["plain_cnn"]


def test_every_template_ships_as_a_file_with_placeholders():
    for name in TEMPLATES:
        assert load_template(name).get_identifiers(), name


def test_delta_prompt_carries_parent_score_dataset_and_format():
    spec = dataset_spec("mnist5k")
    text = parent_prompt("delta", PARENT, spec, score=0.8123, goal="beat the parent")
    assert PARENT.strip() in text
    assert "0.8123" in text and "mnist5k" in text and "1x28x28" in text
    assert "beat the parent" in text and "<delta>" in text
    assert "$" not in text.replace(PARENT, "")  # every placeholder filled


def test_full_prompt_asks_for_nn_block_and_unscored_parent_says_so():
    text = parent_prompt("full", PARENT, dataset_spec("digits"))
    assert "<nn>" in text and "not yet measured" in text


def test_values_are_inserted_verbatim():
    code = PARENT + "\n# costs $5 {braces} ${x}\n"
    text = parent_prompt("full", code, dataset_spec("digits"))
    assert "# costs $5 {braces} ${x}" in text


def test_render_rejects_missing_and_unknown_fields():
    with pytest.raises(ValueError, match="missing"):
        render("retry", prompt="p", answer="a")
    with pytest.raises(ValueError, match="unexpected"):
        render("retry", prompt="p", answer="a", feedback="f", extra=1)
    with pytest.raises(ValueError, match="unknown prompt template"):
        load_template("nope")
    with pytest.raises(ValueError, match="mode"):
        parent_prompt("patch", PARENT, dataset_spec("digits"))


def test_retry_prompt_quotes_bounded_answer_and_feedback():
    text = retry_prompt("ORIGINAL", "x" * 10_000, "Your previous answer was rejected (no_delta).")
    assert text.startswith("ORIGINAL") and "rejected (no_delta)" in text
    assert len(text) < 4000


def test_answer_formats_round_trip_through_the_codec():
    child = PARENT.replace("nn.ReLU(inplace=True)", "nn.GELU()")
    assert apply_output(PARENT, delta_answer(make_delta(PARENT, child))) == child
    assert extract_code(full_answer(child)) == child


def test_choose_modes_gives_each_cycle_its_exact_share():
    rng = random.Random(0)
    for n, frac, full in ((8, 0.8, 2), (8, 0.5, 4), (10, 0.6, 4), (3, 1.0, 0), (5, 0.0, 5)):
        modes = choose_modes(rng, n, frac)
        assert len(modes) == n and modes.count("full") == full
    places = {tuple(choose_modes(random.Random(s), 8, 0.5)) for s in range(20)}
    assert len(places) > 1  # which slots are full is drawn
    with pytest.raises(ValueError):
        choose_modes(rng, 8, 1.5)
    with pytest.raises(ValueError):
        choose_modes(rng, 8, 0.5, t=0)


def test_choose_modes_keeps_the_runs_share_where_a_cycle_cannot():
    rng = random.Random(1)
    per_cycle = [choose_modes(rng, 8, 0.58, t).count("full") for t in range(1, 4)]
    assert per_cycle == [3, 4, 3]  # 0.42 of 24 slots is 10.08: 10 in 3 cycles, not 3 x 3
    for t in range(1, 40):  # the run's count never drifts from its share by half a slot
        total = sum(choose_modes(rng, 7, 0.7, k).count("full") for k in range(1, t + 1))
        assert abs(total - t * 7 * 0.3) <= 0.5 + 1e-9


def test_training_delta_uses_the_least_context_that_places_every_hunk():
    from llmnas_dist.admission.delta import parse_hunks

    child = PARENT.replace("nn.ReLU(inplace=True)", "nn.GELU()")
    diff = training_delta(PARENT, child)
    assert apply_output(PARENT, delta_answer(diff)) == child
    (hunk,) = parse_hunks(diff)
    assert [kind for kind, _ in hunk.ops] == ["-", "+"]  # the removed line places it
    assert diff.splitlines()[:3] == ["--- baseline.py", "+++ improved.py", "@@ @@"]
    added = PARENT.replace(
        "        self.device = device\n",
        "        self.device = device\n        self.extra = nn.Identity()\n",
    )
    diff = training_delta(PARENT, added)
    (hunk,) = parse_hunks(diff)
    assert [kind for kind, _ in hunk.ops] == [" ", "+", " "]  # an insertion: a line a side
    assert apply_output(PARENT, delta_answer(diff)) == added
    with pytest.raises(ValueError, match="identical"):
        training_delta(PARENT, PARENT)


def test_training_delta_widens_context_where_one_line_is_ambiguous():
    parent = "a = 1\nb = 2\nx = 0\nc = 3\nb = 2\nx = 0\nd = 4\n"
    child = parent.replace("b = 2\nx = 0\nd = 4", "b = 2\nx = 5\nd = 4")
    diff = training_delta(parent, child)
    assert apply_output(parent, delta_answer(diff)) == child
    assert diff.count("\n ") == 2  # one context line a side: "d = 4" pins the "x = 0"
    twice = "p = 0\nq = 1\nr = 2\np = 0\nq = 1\nr = 2\n"
    edited = "p = 0\nq = 1\nr = 2\np = 0\nq = 9\nr = 2\n"
    diff = training_delta(twice, edited)
    assert apply_output(twice, delta_answer(diff)) == edited
    assert diff.count("\n ") == 3  # one line was ambiguous: two above (one left below)


def test_delta_prompt_is_short():
    """A 135M model follows a short instruction after the program better than a long one."""
    text = parent_prompt("delta", PARENT, dataset_spec("digits"), 0.5)
    assert len(text) - len(PARENT) < 700
    assert text.index(PARENT.strip()) < text.index("<delta>")  # instruction after the code
