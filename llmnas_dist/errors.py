"""Error taxonomy shared by admission, evaluation and the archive.

Every rejected or failed candidate is stored with one `ErrorClass` value (a short, stable
string) and a bounded human-readable message. The archive stores the string, so adding a
class never needs a schema change; renaming one does (old rows keep the old name).
"""

from __future__ import annotations

import enum

MAX_MESSAGE_CHARS = 2000


class ErrorClass(str, enum.Enum):
    """Why a candidate was rejected or an evaluation failed."""

    # generation
    PROMPT_TOO_LONG = "prompt_too_long"  # prompt + answer budget exceed max_model_len
    # parsing the LLM output
    NO_DELTA = "no_delta"  # no <delta>, fenced diff or raw diff found
    NO_CODE = "no_code"  # full mode: no <nn> or fenced python block found
    BAD_HUNK = "bad_hunk"  # a hunk that cannot be parsed
    HUNK_NOT_FOUND = "hunk_not_found"  # hunk context matches nowhere in the parent
    HUNK_AMBIGUOUS = "hunk_ambiguous"  # hunk context matches in more than one place
    # static checks
    SYNTAX_ERROR = "syntax_error"
    CONTRACT_VIOLATION = "contract_violation"  # no Net class, wrong signature, ...
    FORBIDDEN_IMPORT = "forbidden_import"
    FORBIDDEN_CALL = "forbidden_call"  # eval, exec, open, getattr on modules, dunders, ...
    TOO_LARGE = "too_large"  # source or parameter count over budget
    # sandboxed build / training
    BUILD_FAILED = "build_failed"  # exception while constructing or running forward
    SHAPE_MISMATCH = "shape_mismatch"  # output is not (batch, classes)
    NAN_OUTPUT = "nan_output"  # NaN/inf in the output or a diverging loss
    TIMEOUT = "timeout"
    OUT_OF_MEMORY = "out_of_memory"
    CRASHED = "crashed"  # child died by a signal or exited without a result
    # novelty
    DUPLICATE = "duplicate"  # exact canonical-hash match with an archived program
    NOT_NOVEL = "not_novel"  # MinHash Jaccard >= tau to an archived program
    # infrastructure (not the program's fault)
    WORKER_LOST = "worker_lost"  # the evaluator actor died; retried a bounded number of times


# the rejections of a program that works but repeats the archive (str values, as stored)
NOVELTY_CLASSES = frozenset({ErrorClass.DUPLICATE.value, ErrorClass.NOT_NOVEL.value})


class CandidateRejected(Exception):
    """A generated program failed admission or evaluation; carries its class and message."""

    def __init__(self, error_class: ErrorClass, message: str) -> None:
        self.error_class = ErrorClass(error_class)
        self.message = truncate(message)
        super().__init__(f"{self.error_class.value}: {self.message}")


class ConfigError(ValueError):
    """Bad user configuration; the CLI prints it as one line and exits with status 2."""


def truncate(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """Bound a message so no program can push unbounded text into logs or the archive."""
    if len(text) <= limit:
        return text
    head = limit - 40
    return f"{text[:head]}... [truncated {len(text) - head} chars]"


class UsageError(ValueError):
    """Bad command-line input (a flag, a query, a missing file); exit status 2, no traceback."""


class PlacementError(ConfigError):
    """An actor cannot run where Ray placed it (GPU ids that CUDA cannot see): the run
    stops with the ids and node named rather than train a GPU cluster's work on CPUs."""
