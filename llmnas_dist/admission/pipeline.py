"""Admission of one candidate: the whole filter between an LLM answer and training.

Stages, cheapest first, each ending the candidate with one ErrorClass on failure:
  parse/apply (delta or full code) -> static checks + canonical form and sha256 ->
  MinHash signature and nearest archived neighbour (recorded for every candidate that gets
  this far, even if a later stage rejects it) -> exact-hash dedup -> sandboxed build and
  forward pass -> MinHash novelty (estimated Jaccard >= tau to an archived program).
The build runs before the novelty decision so that a near-copy that does not build is
reported as what it is (build_failed); the validity rates per mode depend on that.

The sandboxed build is the one that runs the program; it builds the canonical code, the
very text whose hash is recorded. An admitted program is added to the novelty index at
once, so a batch is deduplicated against itself before the driver archives it.
Infrastructure failures (the sandbox itself failing) are not the program's fault and
propagate as exceptions, never as a rejection.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from llmnas_dist.admission.build import SAME_FUNCTION
from llmnas_dist.admission.delta import (
    drop_unfinished,
    extract_code,
    extract_delta,
    patch,
    without_hunk,
)
from llmnas_dist.admission.novelty import NoveltyIndex, minhash, signature_bytes
from llmnas_dist.config import AdmissionConfig
from llmnas_dist.errors import CandidateRejected, ErrorClass
from llmnas_dist.evaluation.datasets import DatasetSpec
from llmnas_dist.program.static import canonicalize
from llmnas_dist.vocab import Mode, hunk_left_out

# the rejections of a program that one hunk of a delta can cause alone: what it wrote does
# not parse, breaks the contract or a static rule, or does not build (in the default run of
# 2026-12-05, 2-core EPYC, 5 of 12 deltas did not build, one of them only for its middle
# hunk of three). Not novelty (fewer hunks only come nearer the parent), not the sandbox's
# timeouts and crashes (each hunk left out would cost another build_timeout_s)
HUNK_FAULTS = frozenset(
    {
        ErrorClass.SYNTAX_ERROR,
        ErrorClass.CONTRACT_VIOLATION,
        ErrorClass.FORBIDDEN_IMPORT,
        ErrorClass.FORBIDDEN_CALL,
        ErrorClass.TOO_LARGE,
        ErrorClass.BUILD_FAILED,
        ErrorClass.SHAPE_MISMATCH,
        ErrorClass.NAN_OUTPUT,
    }
)


class BuildResult(Protocol):
    @property
    def param_count(self) -> int: ...

    @property
    def function(self) -> str | None: ...


BuildFn = Callable[[str, tuple[int, int, int], int, AdmissionConfig], BuildResult]


@dataclass
class Verdict:
    """The outcome for one candidate; every field that a stage reached is filled in."""

    admitted: bool
    error_class: ErrorClass | None = None
    message: str = ""
    code: str | None = None  # the program after parse/apply
    canonical: str | None = None  # canonical form (what is built, hashed and archived)
    code_hash: str | None = None
    param_count: int | None = None
    signature: bytes | None = None  # MinHash hashvalues, uint32, num_perm values
    nearest_hash: str | None = None
    nearest_jaccard: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no code, no signature bytes)."""
        return {
            "admitted": self.admitted,
            "error_class": self.error_class.value if self.error_class else None,
            "message": self.message,
            "param_count": self.param_count,
            "code_hash": self.code_hash,
            "nearest_hash": self.nearest_hash,
            "nearest_jaccard": self.nearest_jaccard,
        }


def sandboxed_build(
    code: str, in_shape: tuple[int, int, int], num_classes: int, cfg: AdmissionConfig
) -> BuildResult:
    """The sandbox's build check (imported on first use: it is the heavy part)."""
    from llmnas_dist.admission.build import build_check

    return build_check(code, in_shape, num_classes, cfg)


class Admission:
    """Admits candidates for one dataset against one novelty index."""

    def __init__(
        self,
        cfg: AdmissionConfig,
        dataset: DatasetSpec,
        index: NoveltyIndex | None = None,
        build: BuildFn = sandboxed_build,
    ) -> None:
        self.cfg = cfg
        self.dataset = dataset
        self.index = index if index is not None else NoveltyIndex.from_config(cfg)
        self.build = build
        self._functions: dict[str, str | None] = {}  # a parent's code hash -> its function

    def admit(
        self,
        output: str,
        mode: Mode | str = Mode.FULL,
        parent: str | None = None,
        unanswered: str | None = None,
        note: str | None = None,
    ) -> Verdict:
        """Admit a raw LLM answer: a delta against `parent`, or a full program.
        `unanswered` is the generator's reason for not answering (`GenerationResult.error`:
        the prompt did not fit max_model_len); such a candidate is rejected as that. `note`
        (how it was generated, e.g. why no grammar applied) leads the verdict's message, as
        does what was dropped from a cut-off delta (`delta.drop_unfinished`)."""
        if unanswered:
            return Verdict(False, ErrorClass.PROMPT_TOO_LONG, unanswered)
        notes: list[str] = [note] if note else []
        diff = ""
        try:
            if mode == "delta":
                if parent is None:
                    raise ValueError("delta mode needs the parent program")
                output, cut = drop_unfinished(output)
                notes += [cut] if cut else []
                diff = extract_delta(output)
                patched = patch(parent, diff, self.cfg.delta_fuzz)
                code = patched.code
                notes += patched.notes
            elif mode == "full":
                code = extract_code(output)
            else:
                raise ValueError(f"mode must be 'delta' or 'full', got {mode!r}")
        except CandidateRejected as exc:
            return Verdict(False, exc.error_class, "; ".join([*notes, exc.message]))
        verdict = self.admit_program(code, "; ".join(notes), parent)
        if diff and parent and self.cfg.drop_faulty_hunks and verdict.error_class in HUNK_FAULTS:
            return self._without_a_hunk(parent, diff, notes, verdict) or verdict
        return verdict

    def _without_a_hunk(
        self, parent: str, diff: str, notes: list[str], rejected: Verdict
    ) -> Verdict | None:
        """The first admitted program of `diff` with one hunk left out, the last hunk tried
        first (`AdmissionConfig.drop_faulty_hunks`); None where none is."""
        count = sum(line.startswith("@@") for line in diff.split("\n"))
        why = f"{rejected.error_class.value if rejected.error_class else ''}: {rejected.message}"
        for number in range(count, 0, -1):
            rest = without_hunk(diff, number)
            if rest is None:
                return None  # a lone hunk: leaving it out would leave nothing
            try:
                patched = patch(parent, rest, self.cfg.delta_fuzz)
            except CandidateRejected:
                continue  # what is left does not apply (or changes nothing)
            left_out = hunk_left_out(number, count, why)
            verdict = self.admit_program(patched.code, "; ".join([*notes, left_out]), parent)
            if verdict.admitted:
                return verdict
        return None

    def admit_program(self, code: str, note: str = "", parent: str | None = None) -> Verdict:
        """Admit program source as it is (a hand-written file, an applied delta); `note`
        (how fuzz placed a delta, how the answer was cut) is the message of an admitted
        verdict and leads that of a rejected one. A program written from `parent` that
        computes what its parent computes is not novel (`same_function`)."""
        verdict = Verdict(False, message=note, code=code)
        try:
            self._run_stages(verdict, code, parent)
        except CandidateRejected as exc:
            verdict.error_class = exc.error_class
            verdict.message = f"{note}; {exc.message}" if note else exc.message
            return verdict
        verdict.admitted = True
        return verdict

    def _run_stages(self, v: Verdict, code: str, parent: str | None) -> None:
        v.canonical, v.code_hash = canonicalize(code, self.cfg)
        mh = minhash(v.canonical, self.cfg.num_perm, self.cfg.shingle_size)
        v.signature = signature_bytes(mh)
        if v.code_hash in self.index:
            v.nearest_hash, v.nearest_jaccard = v.code_hash, 1.0
            raise CandidateRejected(
                ErrorClass.DUPLICATE, f"identical to archived program {v.code_hash[:12]}"
            )
        v.nearest_hash, v.nearest_jaccard = self.index.nearest(mh)
        report = self.build(v.canonical, self.dataset.in_shape, self.dataset.num_classes, self.cfg)
        v.param_count = int(report.param_count)
        if not self.index.is_novel(v.nearest_jaccard):
            raise CandidateRejected(
                ErrorClass.NOT_NOVEL,
                f"estimated Jaccard {v.nearest_jaccard:.3f} >= tau {self.cfg.tau} to archived "
                f"program {(v.nearest_hash or '')[:12]}",
            )
        if parent is not None and self.same_function(report.function, parent):
            raise CandidateRejected(ErrorClass.NOT_NOVEL, SAME_FUNCTION)
        self.index.add(v.code_hash, mh)

    def same_function(self, function: str | None, parent: str) -> bool:
        """Whether a program whose build reported `function` computes what `parent`
        computes (the build's fingerprint of the forward, sandbox.child.tasks.traced_forward):
        the parent is built once per code; False where either reported none or the parent
        does not build."""
        if function is None:
            return False
        key = hashlib.sha256(parent.encode()).hexdigest()
        if key not in self._functions:
            try:
                built = self.build(
                    parent, self.dataset.in_shape, self.dataset.num_classes, self.cfg
                )
                self._functions[key] = built.function
            except CandidateRejected:
                self._functions[key] = None
        return self._functions[key] == function
