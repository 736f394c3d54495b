"""What a finished answer must meet before generation returns it (`AnswerTarget`): its
program builds for the run's dataset, as admission will build it, and is novel against the
archived programs near its parent, as admission will judge it. `admission.partial`'s
LineJudge asks it when an answer's end tag is written; generation/lookup.py then draws the
answer again where it failed (`generation.redraw_builds`)."""

from __future__ import annotations

import ast
import dataclasses
import logging
import re
from collections.abc import Callable, Iterable

import numpy as np

from llmnas_dist.admission.build import BuildReport, build_check
from llmnas_dist.admission.novelty import (
    SIGNATURE_DTYPE,
    NoveltyIndex,
    estimated_jaccard,
    minhash,
    signature_bytes,
)
from llmnas_dist.config import AdmissionConfig
from llmnas_dist.errors import CandidateRejected
from llmnas_dist.program.source import parse_source
from llmnas_dist.program.static import canonicalize
from llmnas_dist.sandbox.runner import SandboxError

log = logging.getLogger(__name__)

# The archived programs an answer is compared with: those at least this similar to its
# parent (estimated Jaccard). Jaccard distance is a metric: a child within 0.3 of its parent
# (the deltas of the default runs: 0.77-0.95 similar) that is a near-copy (within 1 - tau,
# 0.1) of a program X has X within 0.4 of the parent.
NEAR_PARENT = 0.6

# where the sandbox's report of an exception names the program line that raised it
# (sandbox/child/supervisor.py `_describe_exception`)
_PROGRAM_LINE = re.compile(r"\(program line (\d+)\)\Z")


@dataclasses.dataclass(frozen=True)
class BuildFault:
    """Why a program does not build: `line` is the program line that raised (None: the
    verdict names none, as a wrong output shape), `why` the rejection's class and message."""

    line: int | None
    why: str


@dataclasses.dataclass(frozen=True)
class AnswerTarget:
    """What a finished answer must meet: build for a dataset of shape `in_shape` with
    `num_classes` classes under admission's limits and budget (`cfg`), and stay below
    admission's tau from every archived program in `neighbours` (MinHash signatures as
    `novelty.signature_bytes` writes them, one after another: the programs near the
    answer's parent, the parent included; empty: the parent alone is compared). `tried`:
    the lines those programs hold and the parent does not (`edit_lines`), the edits already
    made near it: a delta that is a near-copy and wrote one of them goes back to that line."""

    in_shape: tuple[int, int, int]
    num_classes: int
    cfg: AdmissionConfig
    neighbours: bytes = b""
    tried: frozenset[str] = frozenset()

    def build(self, code: str) -> BuildReport | BuildFault | None:
        """Build `code` as admission builds it (`build_check`, in the sandbox): its report
        where it builds, why where it does not, None where the sandbox itself fails (not the
        program's fault: admission will say what it is)."""
        try:
            return build_check(code, self.in_shape, self.num_classes, self.cfg)
        except CandidateRejected as exc:
            line = _PROGRAM_LINE.search(exc.message)
            return BuildFault(int(line.group(1)) if line else None, str(exc))
        except SandboxError as exc:
            log.warning("a build before admission failed in the sandbox itself: %s", exc)
        return None

    def near(
        self,
        index: NoveltyIndex,
        parent_hash: str | None,
        parent: str,
        code_of: Callable[[str], str],
    ) -> AnswerTarget:
        """This target for an answer to the archived program `parent_hash` (`parent`):
        `neighbours` and `tried` from the programs `index` holds within NEAR_PARENT of it
        (`code_of`: an archived program's code by its hash)."""
        others = [h for h in index.near(parent_hash, NEAR_PARENT) if h != parent_hash]
        return dataclasses.replace(
            self,
            neighbours=index.neighbourhood(parent_hash, NEAR_PARENT),
            tried=edit_lines(parent, (code_of(h) for h in others)),
        )

    def with_sibling(self, code: str, parent: str) -> AnswerTarget:
        """This target once an earlier answer of the same generation call to the same
        `parent` made `code`: it joins `neighbours` and its edits join `tried`, as if it were
        archived already. The answers of one call are all decoded before any is admitted,
        so without this two children of one parent repeat each other (a default run of
        2026-12-06 with parents by rank: 2 of the 4 deltas rejected as not novel in its
        cycles 1 and 2 were near a sibling from their own call)."""
        cfg = self.cfg
        try:
            canonical = canonicalize(code, cfg)[0]
        except (CandidateRejected, ValueError, SyntaxError, RecursionError):
            return self
        signature = signature_bytes(minhash(canonical, cfg.num_perm, cfg.shingle_size))
        return dataclasses.replace(
            self,
            neighbours=self.neighbours + signature,
            tried=self.tried | edit_lines(parent, [code]),
        )

    def copy_of(self, code: str, parent: str | None = None) -> str | None:
        """'estimated Jaccard J >= tau T to an archived program near its parent' where
        admission will find `code` (in canonical form) that near one of `neighbours` or
        its `parent` and reject it as not novel; None otherwise, also where `code` is not
        one admission can canonicalize (it says why)."""
        cfg = self.cfg
        rows = np.frombuffer(self.neighbours, dtype=SIGNATURE_DTYPE).reshape(-1, cfg.num_perm)
        try:
            child = minhash(canonicalize(code, cfg)[0], cfg.num_perm, cfg.shingle_size)
            if parent:
                own = minhash(canonicalize(parent, cfg)[0], cfg.num_perm, cfg.shingle_size)
                rows = np.vstack([rows, np.asarray(own.hashvalues, dtype=SIGNATURE_DTYPE)])
        except (CandidateRejected, ValueError, SyntaxError, RecursionError):
            return None
        if not len(rows):
            return None
        near = float(estimated_jaccard(rows, np.asarray(child.hashvalues, SIGNATURE_DTYPE)).max())
        if near < cfg.tau:
            return None
        return (
            f"estimated Jaccard {near:.3f} >= tau {cfg.tau} to an archived program near its parent"
        )


def line_key(text: str) -> str:
    """A program line as the archive's canonical form writes it (`ast.unparse`) where it
    parses alone, else its words joined by single spaces (a block header): an answer's
    line and an archived line compare equal when they say the same. A line that makes an
    attribute of `self` is keyed by the attribute alone (`self.pre_block = ...`): the same
    block made again with another width or kernel is still the edit a near program made
    (a default run of 2026-12-06, cycles 2 and 3: 4 of the 7 deltas rejected as not novel
    were near a sibling that made the same `self.input_gate` or `self.pre_block` with
    another hidden width, each after 3 novelty redraws)."""
    stripped = text.strip()
    try:
        tree = parse_source(stripped)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return " ".join(stripped.split())
    made = tree.body[0] if len(tree.body) == 1 else None
    if (
        isinstance(made, ast.Assign)
        and len(made.targets) == 1
        and isinstance(target := made.targets[0], ast.Attribute)
        and isinstance(target.value, ast.Name)
        and target.value.id == "self"
    ):
        return f"self.{target.attr} = ..."
    return ast.unparse(tree)


def edit_lines(parent: str, others: Iterable[str]) -> frozenset[str]:
    """The lines (`line_key`) that the programs `others` hold and `parent` does not: the
    edits already made near it (`AnswerTarget.tried`)."""
    own = {line_key(line) for line in parent.splitlines()}
    return frozenset(
        key
        for code in others
        for line in code.splitlines()
        if (key := line_key(line)) and key not in own
    )
