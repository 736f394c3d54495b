"""What the analysis reads from an archive, stated as a Protocol.

llmnas_dist outside its cli/ may not import db (the import rules of ARCHITECTURE.md), so
the report and the run data (report.py, rundata.py) cannot name `db.archive.Archive` or
its contract `db.contract.ArchiveReader`. They type against `RunSource` instead: the few
reads they make, with the parameters they pass. `Archive` satisfies it structurally (mypy
checks it where the CLI hands an Archive over), and a test may pass any object that has
these methods.

Rows come back as the archive's models; the analysis reads their columns by name (a run's
`dataset`, `budget`, `config`; a cycle's `t`, `elites`, `n_evaluators`; ...), so they are
`Any` here rather than a copy of db/models.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from llmnas_dist.spans import Span


class RunSource(Protocol):
    """The archive reads of the analysis (see db.contract.ArchiveReader for the promises)."""

    def get_run(self, run_id: str) -> Any:
        """The run (NotFound when there is none)."""
        ...

    def cycles(self, run_id: str) -> Sequence[Any]:
        """The run's cycles in order."""
        ...

    def candidates(self, run_id: str) -> Sequence[Any]:
        """The run's candidates in (cycle, slot, attempt) order."""
        ...

    def evaluations(self, run_id: str) -> Sequence[Any]:
        """The run's evaluations in the order recorded."""
        ...

    def adapters(self, run_id: str) -> Sequence[Any]:
        """The run's fine-tuned adapters by version."""
        ...

    def get_architecture(self, hash_: str) -> Any:
        """The program stored under a full hash (NotFound when there is none)."""
        ...

    def spans(self, run_id: str) -> Sequence[Span]:
        """The run's busy spans in start order."""
        ...

    def top(self, run_id: str, k: int) -> Sequence[Any]:
        """The run's k best architectures (rank, hash, score, n_seeds, params, first_cycle)."""
        ...

    def lineage(self, hash_: str) -> Sequence[Any]:
        """The chain from an architecture back to its seed (named tuples)."""
        ...

    def failures(self, run_id: str) -> Sequence[tuple[str, bool | None, int]]:
        """(error_class, constrained, count) of the run's rejected and failed candidates."""
        ...
