"""One run's rows as typed records, read through the Archive's public methods.

`load_run_data` turns a run's cycles, candidates, evaluations, adapters and programs into
plain frozen rows (`CycleRow`, `CandidateRow`, `EvalRow`, `AdapterRow`) held by `RunData`,
so the diagnostics run as pure functions on synthetic rows just as on a real run. The
per-run views below derive what several results share: architecture scores, each cycle's
samples and elite set, the proposals of the LLM. Nothing here imports db or ray:
`load_run_data` takes any object with the Archive's read methods.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llmnas_dist.admission.novelty import signature_from_bytes
from llmnas_dist.analysis.source import RunSource
from llmnas_dist.analysis.stats import mean, top_rho
from llmnas_dist.errors import NOVELTY_CLASSES, ErrorClass
from llmnas_dist.evaluation.noise import scores_by_arch
from llmnas_dist.vocab import budget_key, was_admitted

SEED_CYCLE = 0  # the seed programs: evaluated, but not samples of the LLM
UNANSWERED = ErrorClass.PROMPT_TOO_LONG.value  # never reached the LLM: not one of its samples


@dataclass(frozen=True)
class CycleRow:
    t: int
    status: str
    gamma_t: float | None = None
    n_elites: int | None = None
    elite_scores: tuple[float, ...] | None = None  # E_t as snapshotted when t completed
    settings: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class CandidateRow:
    cycle: int
    slot: int
    attempt: int
    mode: str
    status: str
    error_class: str | None = None
    output_tokens: int | None = None
    arch_hash: str | None = None
    parent_hash: str | None = None
    nearest_jaccard: float | None = None
    message: str | None = None
    constrained: bool | None = None  # sampled under a grammar (None: not recorded)

    @property
    def decided(self) -> bool:
        return self.status != "generated"

    @property
    def novelty_rejected(self) -> bool:
        return self.status == "rejected" and self.error_class in NOVELTY_CLASSES

    @property
    def archived(self) -> bool:
        """Passed admission: its program is in the archive (a later evaluation may fail)."""
        return self.arch_hash is not None and was_admitted(self.status, self.arch_hash)

    @property
    def valid(self) -> bool:
        """A runnable program came out of the generation; novelty is judged separately."""
        return self.archived or self.novelty_rejected


@dataclass(frozen=True)
class EvalRow:
    arch_hash: str
    dataset: str
    seed: int
    budget: str
    score: float | None


@dataclass(frozen=True)
class AdapterRow:
    cycle: int
    version: int
    n_examples: int
    train_loss: float | None


@dataclass
class RunData:
    """Everything the diagnostics read from one run."""

    run_id: str
    dataset: str
    budget: str
    config: Mapping[str, Any]
    cycles: list[CycleRow]
    candidates: list[CandidateRow]
    evaluations: list[EvalRow]
    adapters: list[AdapterRow] = field(default_factory=list)
    signatures: dict[str, np.ndarray] = field(default_factory=dict)
    codes: dict[str, str] = field(default_factory=dict)
    status: str = "running"

    def setting(self, section: str, key: str, default: Any) -> Any:
        value = (self.config.get(section) or {}).get(key, default)
        return default if value is None else value

    @property
    def rho(self) -> float:
        return float(self.setting("ce", "rho", 0.25))

    @property
    def min_elites(self) -> int:
        return int(self.setting("ce", "min_elites", 1))

    @property
    def reference_gamma(self) -> float | None:
        value = (self.config.get("ce") or {}).get("reference_gamma")
        return None if value is None else float(value)

    @property
    def snr_threshold(self) -> float:
        return float(self.setting("reliability", "snr_threshold", 1.0))

    @property
    def reference_budget(self) -> str:
        # the archive's budget key ("epochs=5")
        return budget_key(epochs=float(self.setting("evaluation", "reference_epochs", 5.0)))

    @property
    def model(self) -> str:
        return str(self.setting("generation", "model", "?"))


# ---- per-run views ---------------------------------------------------------------------


def arch_scores(evaluations: Iterable[EvalRow], dataset: str, budget: str) -> dict[str, float]:
    """Architecture -> mean successful score at one dataset and budget (the elite score)."""
    rows = [
        (e.arch_hash, e.seed, e.score)
        for e in evaluations
        if e.dataset == dataset and e.budget == budget
    ]
    return {a: mean(v) for a, v in scores_by_arch(rows).items()}


def cycle_budgets(data: RunData) -> dict[int, str]:
    """The budget each cycle evaluated at (the gate may have raised it; else the run's)."""
    return {c.t: str((c.settings or {}).get("budget") or data.budget) for c in data.cycles}


def samples_by_cycle(data: RunData) -> dict[int, list[float]]:
    """Cycle -> scores of the programs its candidates produced, at the budget that cycle
    evaluated with."""
    budgets = cycle_budgets(data)
    by_budget = {
        b: arch_scores(data.evaluations, data.dataset, b) for b in {data.budget, *budgets.values()}
    }
    out: dict[int, list[float]] = {}
    for c in data.candidates:
        scores = by_budget[budgets.get(c.cycle, data.budget)]
        if c.status == "evaluated" and c.arch_hash in scores:
            out.setdefault(c.cycle, []).append(scores[c.arch_hash])
    return out


def elite_scores_by_cycle(data: RunData) -> dict[int, list[float]]:
    """E_t's scores per completed cycle: the stored snapshot, else recomputed (elitist:
    every program of cycles <= t, current scores)."""
    per_cycle = samples_by_cycle(data)
    out: dict[int, list[float]] = {}
    for cyc in data.cycles:
        if cyc.status != "completed":
            continue
        if cyc.elite_scores is not None:
            out[cyc.t] = list(cyc.elite_scores)
            continue
        pool = [s for t, scores in per_cycle.items() if t <= cyc.t for s in scores]
        if pool:
            out[cyc.t] = top_rho(pool, data.rho, data.min_elites)
    return {t: v for t, v in out.items() if v}


def llm_candidates(candidates: Iterable[CandidateRow]) -> list[CandidateRow]:
    """Judged proposals of the LLM (cycle 0 holds the seed programs, not generations; a
    prompt too long for the model was never answered)."""
    return [
        c for c in candidates if c.cycle > SEED_CYCLE and c.decided and c.error_class != UNANSWERED
    ]


# ---- loading from the archive ----------------------------------------------------------


def _value(x: Any) -> Any:
    return getattr(x, "value", x)


def load_run_data(archive: RunSource, run_id: str) -> RunData:
    """Read one run through the Archive's public methods (NotFound for an unknown run)."""
    run = archive.get_run(run_id)
    cycles = [
        CycleRow(
            t=c.t,
            status=_value(c.status),
            gamma_t=c.gamma_t,
            n_elites=c.n_elites,
            elite_scores=None if c.elites is None else tuple(float(e["score"]) for e in c.elites),
            settings=c.settings,
        )
        for c in archive.cycles(run_id)
    ]
    candidates = [
        CandidateRow(
            cycle=c.cycle,
            slot=c.slot,
            attempt=c.attempt,
            mode=_value(c.mode),
            status=_value(c.status),
            error_class=c.error_class,
            output_tokens=c.output_tokens,
            arch_hash=c.arch_hash,
            parent_hash=c.parent_hash,
            nearest_jaccard=c.nearest_jaccard,
            message=c.message,
            constrained=c.constrained,
        )
        for c in archive.candidates(run_id)
    ]
    evaluations = [
        EvalRow(e.arch_hash, e.dataset, e.seed, e.budget, e.score)
        for e in archive.evaluations(run_id)
    ]
    adapters = [
        AdapterRow(a.cycle, a.version, a.n_examples, a.train_loss) for a in archive.adapters(run_id)
    ]
    codes, signatures = _programs(archive, {c.arch_hash for c in candidates if c.arch_hash})
    return RunData(
        run_id=run.id,
        dataset=run.dataset,
        budget=run.budget,
        config=run.config or {},
        cycles=cycles,
        candidates=candidates,
        evaluations=evaluations,
        adapters=adapters,
        signatures=signatures,
        codes=codes,
        status=_value(run.status),
    )


def _programs(
    archive: RunSource, hashes: Iterable[str]
) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    codes: dict[str, str] = {}
    signatures: dict[str, np.ndarray] = {}
    for h in sorted(hashes):
        arch = archive.get_architecture(h)
        codes[h] = arch.code
        if arch.signature is not None and arch.num_perm:
            # a legacy 64-bit signature is not comparable: left out
            with contextlib.suppress(ValueError):
                signatures[h] = signature_from_bytes(bytes(arch.signature), arch.num_perm)
    return codes, signatures
