"""Proxy reliability at run time: the two studies a cycle tops up, and the gate that acts
on the noise study before the next cycle.

- noise study: `evaluation.noise_seeds` seeds for up to `evaluation.noise_sample` of the
  run's evaluated programs (at the cycle's budget), drawn from (run seed, "noise", t), in
  cycle 0 (the seed programs) from a stream that is the same in every run;
- reference study: one seed at `evaluation.reference_epochs` for up to
  `evaluation.reference_sample` programs (is the short proxy ranking like a longer one?);
- the gate: the noise study's SNR (llmnas_dist/analysis/gate.py decides); below
  `reliability.snr_threshold` it warns and, as configured, adds a seed or raises the
  budget for the next cycle (then E_{t-1} is re-evaluated at the new budget).

What is already studied comes from the driver's in-memory `Evaluations`, not the archive.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from cluster.cycle import SEED_CYCLE, Evaluations, Settings, keyed_rng
from cluster.factory import Actors
from cluster.pool import PoolResult
from cluster.progress import StudyProgress
from db.contract import ArchiveStore, Elite
from llmnas_dist.analysis.gate import noise_gate
from llmnas_dist.config import Config
from llmnas_dist.evaluation.datasets import DatasetSpec
from llmnas_dist.spans import SpanKind
from llmnas_dist.vocab import CandidateStatus, budget_key
from workers.evaluator import EvalTask

log = logging.getLogger(__name__)


class Studies:
    """The studies' evaluations of a cycle, and the gate's settings for the next one."""

    def __init__(
        self,
        cfg: Config,
        archive: ArchiveStore,
        run_id: str,
        spec: DatasetSpec,
        evals: Evaluations,
        actors: Actors,
        on_result: Callable[[PoolResult], None],
    ) -> None:
        self.cfg = cfg
        self.archive = archive
        self.run_id = run_id
        self.spec = spec
        self.evals = evals
        self.actors = actors
        self.on_result = on_result  # records each result (the driver's pipeline)

    def run(self, t: int, settings: Settings) -> None:
        """Top up the noise study (k seeds for a sample) and the reference study (a longer
        budget for a sample) from this cycle's evaluated programs."""
        ev = self.cfg.evaluation
        evaluated = [
            (c.id, c.arch_hash)
            for c in self.archive.candidates(
                self.run_id, cycle=t, statuses=[CandidateStatus.EVALUATED]
            )
            if c.arch_hash
        ]
        tasks: list[EvalTask] = []
        if ev.noise_sample >= 2:
            tasks += self.tasks(evaluated, t, "noise", ev.noise_sample, settings, None)
        if ev.reference_sample >= 1:
            tasks += self.tasks(
                evaluated, t, "reference", ev.reference_sample, settings, ev.reference_epochs
            )
        if tasks:
            log.info("cycle %d: %d study evaluations", t, len(tasks))
            self.evaluate(tasks, StudyProgress(t, len(tasks)))

    def tasks(
        self,
        evaluated: list[tuple[str, str]],
        t: int,
        study: str,
        sample: int,
        settings: Settings,
        epochs: float | None,
    ) -> list[EvalTask]:
        """One study's missing evaluations: (candidate id, architecture) pairs of the cycle
        drawn into the sample while it has room, and the seeds they still lack."""
        budget = settings.budget if epochs is None else budget_key(epochs, None)
        seeds = range(self.cfg.evaluation.noise_seeds) if epochs is None else range(1)
        rows = self.evals.rows(budget)
        studied = {arch for arch, seed, _ in rows if seed == max(seeds)}
        room = max(0, sample - len(studied))
        fresh = sorted({arch: cid for cid, arch in evaluated if arch not in studied}.items())
        chosen = self.sampler(study, t).sample(fresh, min(room, len(fresh)))
        have = {(arch, seed) for arch, seed, _ in rows}
        tasks = []
        for arch_hash, cid in sorted(chosen):
            code = self.archive.get_architecture(arch_hash).code
            for seed in seeds:
                if (arch_hash, seed) not in have:
                    tasks.append(
                        EvalTask(
                            key=f"{study}:{cid}#{seed}",
                            code=code,
                            dataset=self.spec.name,
                            seed=seed,
                            epochs=epochs if epochs is not None else settings.epochs,
                            budget_s=None if epochs is not None else settings.budget_s,
                            arch_hash=arch_hash,
                            candidate_id=cid,
                            kind=SpanKind.STUDY.value,
                        )
                    )
        return tasks

    def sampler(self, study: str, t: int) -> random.Random:
        """The stream a study's sample is drawn from: the run's, except in cycle 0, whose
        programs (the seeds) are the same in every run: there one fixed sample lets a
        repeat run take all of it from the first (evaluation.reuse) instead of training
        about 60% of it again (6 of 15 drawn afresh overlap an earlier draw by 2.4)."""
        return keyed_rng(self.cfg.ce.stream_seed if t != SEED_CYCLE else 0, study, t)

    def gate(self, previous: Settings) -> Settings:
        """SNR of the noise study so far; below the threshold: warn, and if configured add
        a seed or raise the budget for the next cycle."""
        rows = self.evals.rows(previous.budget, self.spec.name)
        rel = self.cfg.reliability
        decision = noise_gate(rows, rel.snr_threshold)
        if decision is None:
            return previous
        gate = decision.to_dict()
        if not decision.low:
            return Settings(previous.seeds, previous.epochs, previous.budget_s, gate)
        log.warning("%s; action: %s", decision.message, rel.action)
        if rel.action == "add_seeds":
            return Settings(min(previous.seeds + 1, rel.max_seeds), *_budget(previous), gate)
        if rel.action == "raise_budget":
            return Settings(previous.seeds, *_raised(previous, rel.budget_factor), gate)
        return Settings(previous.seeds, previous.epochs, previous.budget_s, gate)

    def rebudget(self, t: int, elites: list[Elite], settings: Settings) -> None:
        """The gate raised the proxy budget: scores at different budgets are not comparable,
        so the run is ranked at the new one from now on and E_{t-1} is re-evaluated at it."""
        log.warning("cycle %d: proxy budget is now %s", t, settings.budget)
        self.archive.set_run_budget(self.run_id, settings.budget)
        have = {(arch, seed) for arch, seed, _ in self.evals.rows(settings.budget)}
        tasks = [
            EvalTask(
                key=f"rebudget:{t}:{e.hash}#{seed}",
                code=e.code,
                dataset=self.spec.name,
                seed=seed,
                epochs=settings.epochs,
                budget_s=settings.budget_s,
                arch_hash=e.hash,
            )
            for e in elites
            for seed in range(settings.seeds)
            if (e.hash, seed) not in have
        ]
        self.evaluate(tasks)

    def evaluate(self, tasks: list[EvalTask], progress: StudyProgress | None = None) -> None:
        """Record each task's result as it comes: taken from an earlier run where one
        trained it under the same recipe (evaluation.reuse), else from the pool."""

        def record(item: PoolResult) -> None:
            self.on_result(item)
            if progress is not None:
                progress.done += 1
                progress.reused += item.result.reused_from is not None
                progress.show()

        reused, fresh = self.evals.reusable(tasks)
        for item in reused:
            record(item)
        self.actors.pool.run(fresh, record)
        if progress is not None:
            progress.show(final=True)


def _budget(s: Settings) -> tuple[float | None, float | None]:
    return s.epochs, s.budget_s


def _raised(s: Settings, factor: float) -> tuple[float | None, float | None]:
    if s.epochs is not None:
        return s.epochs * factor, None
    return None, (s.budget_s or 0.0) * factor
