"""Domain errors raised by the archive. All are ValueErrors, so the CLI can report them."""

from __future__ import annotations


class ArchiveError(ValueError):
    """Base class of every archive error."""


class NotFound(ArchiveError):
    """A run, cycle, candidate or architecture that the archive does not hold."""


class AmbiguousPrefix(ArchiveError):
    """A hash prefix that matches more than one architecture."""


class IllegalTransition(ArchiveError):
    """A status change that the state machine does not allow."""


class SchemaMismatch(ArchiveError):
    """The database is not an llmnas archive, or was written by a newer llmnas."""


class ArchiveUnavailable(ArchiveError):
    """The database cannot be reached or opened."""


class AlreadyExists(ArchiveError):
    """A run id that is already taken."""
