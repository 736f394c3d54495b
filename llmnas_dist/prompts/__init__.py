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
from importlib import resources
from string import Template

from llmnas_dist.datasets import DatasetSpec
from llmnas_dist.errors import truncate

TEMPLATES = ("delta", "full", "retry")
DEFAULT_GOAL = "the highest test accuracy after a short, fixed training budget"
MAX_ECHOED_ANSWER_CHARS = 3000  # a retry prompt quotes the failed answer, bounded


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
