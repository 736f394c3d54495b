"""Prompt templates: data files beside this module, filled with `string.Template`.

`$name` placeholders (not `{}`) because the programs pasted into prompts are full of
braces. Filling is strict: a template asking for a field the caller did not give is an
error, and values are inserted verbatim (a program containing `$x` stays as it is).
The answer formats (`delta_answer`, `full_answer`) live here too, so the examples the
model is fine-tuned on always match what the prompts ask for.
"""

from __future__ import annotations

import functools
import random
import re
from importlib import resources
from string import Template

from llmnas_dist.datasets import DatasetSpec
from llmnas_dist.delta import apply_delta, make_delta
from llmnas_dist.errors import CandidateRejected, truncate

TEMPLATES = ("delta", "full", "retry")
DEFAULT_GOAL = "the highest test accuracy after a short, fixed training budget"
MAX_ECHOED_ANSWER_CHARS = 3000  # a retry prompt quotes the failed answer, bounded
# context lines per hunk in taught deltas: the fewest that still place every hunk in one
# spot, from MIN_CONTEXT up; every context line is one more line the model must copy
# exactly, so short hunks are the ones a small model gets right
MIN_CONTEXT = 1
MAX_CONTEXT = 3
_HEADER_NUMBERS = re.compile(r"^@@ -\d+(?:,\d+)? \+\d+(?:,\d+)? @@$", re.M)


@functools.cache
def load_template(name: str) -> Template:
    """The template `<name>.txt` shipped with the package."""
    if name not in TEMPLATES:
        raise ValueError(f"unknown prompt template {name!r}; known: {', '.join(TEMPLATES)}")
    text = resources.files(__name__).joinpath(f"{name}.txt").read_text(encoding="utf-8")
    return Template(text)


def render(name: str, **fields: object) -> str:
    """Fill a template; a missing or unexpected field is a ValueError."""
    template = load_template(name)
    wanted = set(template.get_identifiers())
    given = set(fields)
    if wanted != given:
        raise ValueError(
            f"template {name!r} needs fields {sorted(wanted)}; missing {sorted(wanted - given)}, "
            f"unexpected {sorted(given - wanted)}"
        )
    return template.substitute({k: str(v) for k, v in fields.items()}).strip() + "\n"


def _format_score(score: float | None) -> str:
    return "not yet measured" if score is None else f"{score:.4f}"


def parent_prompt(
    mode: str,
    parent: str,
    dataset: DatasetSpec,
    score: float | None = None,
    goal: str = DEFAULT_GOAL,
) -> str:
    """The prompt asking for a delta against (mode 'delta') or a rewrite of (mode 'full')
    the parent program."""
    if mode not in ("delta", "full"):
        raise ValueError(f"mode must be 'delta' or 'full', got {mode!r}")
    return render(
        mode,
        parent=parent.rstrip("\n"),
        score=_format_score(score),
        dataset=dataset.name,
        in_shape="x".join(str(v) for v in dataset.in_shape),
        num_classes=dataset.num_classes,
        goal=goal,
    )


def retry_prompt(prompt: str, answer: str, feedback: str) -> str:
    """The original prompt, the rejected answer (bounded) and the admission feedback."""
    return render(
        "retry",
        prompt=prompt.rstrip("\n"),
        answer=truncate(answer.strip(), MAX_ECHOED_ANSWER_CHARS),
        feedback=feedback.strip(),
    )


def _bare_headers(diff: str) -> str:
    """Hunk headers without line numbers: the prompt shows no numbers, so the model could
    only guess them (and the codec recomputes them from the bodies anyway)."""
    return _HEADER_NUMBERS.sub("@@ @@", diff)


def training_delta(parent: str, child: str) -> str:
    """The diff parent -> child that the model is taught to write: the fewest context lines
    (MIN_CONTEXT..MAX_CONTEXT) with which it applies back to exactly the child, and bare
    `@@ @@` hunk headers."""
    if parent == child:
        raise ValueError("parent and child are identical: there is no delta")
    for context in range(MIN_CONTEXT, MAX_CONTEXT + 1):
        diff = _bare_headers(make_delta(parent, child, context))
        try:
            if apply_delta(parent, diff) == child:
                return diff
        except CandidateRejected:
            continue
    return _bare_headers(make_delta(parent, child, MAX_CONTEXT))


def delta_answer(diff: str) -> str:
    """A well-formed delta-mode answer (fine-tuning target)."""
    return f"<delta>\n{diff.rstrip()}\n</delta>"


def full_answer(code: str) -> str:
    """A well-formed full-mode answer (fine-tuning target)."""
    return f"<nn>\n{code.rstrip()}\n</nn>"


def choose_mode(rng: random.Random, delta_fraction: float) -> str:
    """'delta' with probability delta_fraction (GenerationConfig.delta_fraction), else 'full'."""
    if not 0.0 <= delta_fraction <= 1.0:
        raise ValueError(f"delta_fraction must be in [0, 1], got {delta_fraction}")
    return "delta" if rng.random() < delta_fraction else "full"
