"""The project's shared vocabulary, defined once: statuses and their state machines, proposal
modes, the evaluation budget key, the content hash of a program and where an actor runs.

Every layer may import this module (db stores these values, workers and the driver pass
them, the analysis reads them); it imports nothing of the project.
"""

from __future__ import annotations

import enum
import hashlib
import re
from typing import Any

SHORT_HASH = 12  # hex digits of a hash shown to people (tables, logs, the end-of-run summary)


def code_hash(canonical: str) -> str:
    """Content address of a (canonical) program: sha256 hex of its UTF-8 bytes."""
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def budget_key(epochs: float | None = None, budget_s: float | None = None) -> str:
    """The evaluation budget as the archive keys it: "epochs=1" or "budget_s=30"."""
    if (epochs is None) == (budget_s is None):
        raise ValueError("give exactly one of epochs and budget_s")
    return f"epochs={epochs:g}" if epochs is not None else f"budget_s={budget_s:g}"


def hunk_left_out(number: int, count: int, why: str) -> str:
    """How an admitted delta's message says it was admitted without its hunk `number` of
    `count` (AdmissionConfig.drop_faulty_hunks); `why` is the whole delta's rejection."""
    return f"hunk {number} of {count} left out (whole: {why})"


_LEFT_OUT = re.compile(r"\bhunk \d+ of \d+ left out \(whole: ")


def left_out_a_hunk(message: str | None) -> bool:
    """Whether a candidate's message says `hunk_left_out` (the report counts them apart)."""
    return message is not None and _LEFT_OUT.search(message) is not None


class Mode(str, enum.Enum):
    """How a proposal is written: a unified-diff delta against its parent, or a whole program."""

    DELTA = "delta"
    FULL = "full"

    def __str__(self) -> str:  # prompts, file names and messages format the bare value
        return self.value


class _Transitions(str, enum.Enum):
    """A str enum whose allowed successors are listed in `_SUCCESSORS`."""

    def can_become(self, other: Any) -> bool:
        return type(self)(other) in _SUCCESSORS[type(self)][self]

    def successors(self) -> frozenset[Any]:
        return _SUCCESSORS[type(self)][self]


class RunStatus(_Transitions):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPED = "stopped"


class CycleStatus(_Transitions):
    RUNNING = "running"
    COMPLETED = "completed"


class CandidateStatus(_Transitions):
    GENERATED = "generated"
    REJECTED = "rejected"
    ADMITTED = "admitted"
    EVALUATING = "evaluating"
    EVALUATED = "evaluated"
    FAILED = "failed"


# A candidate passed admission when it reached one of these statuses. FAILED is ambiguous
# (a generation error, or an evaluation that failed after admission): such a candidate
# counts as admitted exactly when it has an architecture (see `was_admitted`).
ADMITTED_STATUSES = frozenset(
    {CandidateStatus.ADMITTED, CandidateStatus.EVALUATING, CandidateStatus.EVALUATED}
)


def was_admitted(status: str, arch_hash: str | None) -> bool:
    """Whether a candidate passed admission (its evaluation may have failed since)."""
    if status in ADMITTED_STATUSES:
        return True
    return status == CandidateStatus.FAILED and arch_hash is not None


_SUCCESSORS: dict[type, dict[Any, frozenset[Any]]] = {
    # a stopped or failed run may be resumed
    RunStatus: {
        RunStatus.RUNNING: frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.STOPPED}),
        RunStatus.FAILED: frozenset({RunStatus.RUNNING}),
        RunStatus.STOPPED: frozenset({RunStatus.RUNNING}),
        RunStatus.COMPLETED: frozenset(),
    },
    CycleStatus: {
        CycleStatus.RUNNING: frozenset({CycleStatus.COMPLETED}),
        CycleStatus.COMPLETED: frozenset(),
    },
    CandidateStatus: {
        CandidateStatus.GENERATED: frozenset(
            {CandidateStatus.REJECTED, CandidateStatus.ADMITTED, CandidateStatus.FAILED}
        ),
        CandidateStatus.ADMITTED: frozenset(
            {CandidateStatus.EVALUATING, CandidateStatus.EVALUATED, CandidateStatus.FAILED}
        ),
        # back to admitted: the evaluator died and the evaluation is queued again
        CandidateStatus.EVALUATING: frozenset(
            {CandidateStatus.EVALUATED, CandidateStatus.FAILED, CandidateStatus.ADMITTED}
        ),
        CandidateStatus.REJECTED: frozenset(),
        CandidateStatus.EVALUATED: frozenset(),
        CandidateStatus.FAILED: frozenset(),
    },
}


def decoding_of(constrained: bool | None) -> str:
    """How a candidate's answer was sampled, as the CLI and reports name it."""
    if constrained is None:
        return "unrecorded"  # archived before constrained decoding was kept
    return "constrained" if constrained else "unconstrained"
