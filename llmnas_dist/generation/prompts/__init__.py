"""Prompt templates: data files beside this module, filled with `string.Template`.

`$name` placeholders (not `{}`) because the programs pasted into prompts are full of
braces. Filling is strict: a template asking for a field the caller did not give is an
error, and values are inserted verbatim (a program containing `$x` stays as it is).
The answer formats (`delta_answer`, `full_answer`) live here too, so the examples the
model is fine-tuned on always match what the prompts ask for.
"""

from __future__ import annotations

import difflib
import functools
import math
import random
import re
from collections.abc import Sequence
from importlib import resources
from string import Template

from llmnas_dist.admission.delta import BASELINE_NAME, IMPROVED_NAME, apply_delta, make_delta
from llmnas_dist.errors import CandidateRejected, truncate
from llmnas_dist.evaluation.datasets import DatasetSpec
from llmnas_dist.vocab import Mode

TEMPLATES = ("delta", "full", "retry")
DEFAULT_GOAL = "the highest test accuracy after a short, fixed training budget"
MAX_ECHOED_ANSWER_CHARS = 3000  # a retry prompt quotes the failed answer, bounded
# Context in taught deltas: every context line is one more line the model must copy
# exactly, so a hunk that removes lines (its removed lines locate it) gets none, a pure
# insertion one line on each side; more only where that does not place the hunk in one
# spot. Measured on held-out parents: the small model copies the lines next to a fixed
# anchor well and makes up the context it has to look for.
MAX_EXTRA_CONTEXT = 3
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


def _hunks(
    parent: list[str],
    child: list[str],
    changes: Sequence[tuple[str, int, int, int, int]],
    extra: int,
) -> list[str]:
    """Hunk lines for the changes (difflib opcodes), each with its context; changes whose
    context windows touch share one hunk, so no line is context to two hunks."""
    out: list[str] = []
    group: list[tuple[int, int, int, int, int, int]] = []  # (from, to, i1, i2, j1, j2)

    def flush() -> None:
        if not group:
            return
        out.append("@@ @@")
        cursor = group[0][0]
        for _, _, i1, i2, j1, j2 in group:
            out.extend(" " + line for line in parent[cursor:i1])
            out.extend("-" + line for line in parent[i1:i2])
            out.extend("+" + line for line in child[j1:j2])
            cursor = i2
        out.extend(" " + line for line in parent[cursor : group[-1][1]])
        group.clear()

    for _, i1, i2, j1, j2 in changes:
        context = (0 if i2 > i1 else 1) + extra
        window = (max(0, i1 - context), min(len(parent), i2 + context))
        if group and window[0] > group[-1][1]:
            flush()
        group.append((*window, i1, i2, j1, j2))
    flush()
    return out


def training_delta(parent: str, child: str) -> str:
    """The diff parent -> child that the model is taught to write: one hunk per changed
    run of lines, bare `@@ @@` headers (the prompt shows no line numbers, so the model
    could only guess them; the codec recomputes them), and the least context with which
    the diff applies back to exactly the child (see MAX_EXTRA_CONTEXT)."""
    if parent == child:
        raise ValueError("parent and child are identical: there is no delta")
    a, b = parent.splitlines(), child.splitlines()
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    changes = [op for op in matcher.get_opcodes() if op[0] != "equal"]
    head = f"--- {BASELINE_NAME}\n+++ {IMPROVED_NAME}\n"
    for extra in range(MAX_EXTRA_CONTEXT + 1):
        diff = head + "\n".join(_hunks(a, b, changes, extra)) + "\n"
        try:
            if apply_delta(parent, diff) == child:
                return diff
        except CandidateRejected:
            continue
    return _HEADER_NUMBERS.sub("@@ @@", make_delta(parent, child, MAX_EXTRA_CONTEXT))


def delta_answer(diff: str) -> str:
    """A well-formed delta-mode answer (fine-tuning target)."""
    return f"<delta>\n{diff.rstrip()}\n</delta>"


def full_answer(code: str) -> str:
    """A well-formed full-mode answer (fine-tuning target)."""
    return f"<nn>\n{code.rstrip()}\n</nn>"


def choose_modes(rng: random.Random, n: int, delta_fraction: float, t: int = 1) -> list[Mode]:
    """A mode per slot of cycle `t` (1-based) of n slots: 'full' slots at places drawn from
    rng, the others 'delta', as many full slots as keep the run's share exact so far
    (round(t * n * (1 - delta_fraction)) over cycles 1..t; GenerationConfig.delta_fraction).
    A quota, not a draw per slot: a short run still gets the full-mode attempts its
    delta-vs-full comparison needs (a draw per slot gave the default 3-cycle run 2 full
    attempts of 24 at 0.8, 9 at 0.5). Over the run, not per cycle: a share that is not a
    multiple of 1/n still adds up (0.58 of 8 slots gives 3, 4, 3 full slots: 10 in 3
    cycles, where a per-cycle quota gives 3 a cycle, 9)."""
    if not 0.0 <= delta_fraction <= 1.0:
        raise ValueError(f"delta_fraction must be in [0, 1], got {delta_fraction}")
    if t < 1:
        raise ValueError(f"cycle must be >= 1, got {t}")
    share = n * (1.0 - delta_fraction)
    count = math.floor(t * share + 0.5) - math.floor((t - 1) * share + 0.5)
    full = set(rng.sample(range(n), count))
    return [Mode.FULL if i in full else Mode.DELTA for i in range(n)]
