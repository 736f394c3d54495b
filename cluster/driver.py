"""The CE driver: one cycle is the named steps of DESIGN.md, read top to bottom.

    prepare      run row, novelty index from the whole archive, the seed programs as
                 cycle 0 (evaluated, E_0 selected), the warm-start adapter theta_0
    run_cycle(t)
      6 finetune  \\ of cycle t-1, as cycle t starts: LoRA on E_{t-1} (parent prompt -> delta
      7 swap      / to the elite) from the last adapter, loaded by the generation actors.
                   The last cycle's update would serve no cycle (a completed run is not
                   extended): left out (2026-12-06: 100 s of a 907 s default run); a run
                   killed between cycles trains the missing update when it resumes
      1 parents  E_{t-1} (the snapshot stored with cycle t-1) -> a parent and a mode per slot
      2 generate \\  pipelined: generation batches stream into admission, admitted programs
      3 admit     > stream into the evaluator pool; a rejected delta is asked again with its
      4 evaluate /  error fed back (bounded); evaluators never wait for a whole batch
        studies  extra seeds / a longer reference budget for a sample (proxy reliability)
      5 select   gamma_t and E_t from the archive (elitist over the whole run); cycle t
                 marked completed

Exactly once: every candidate id is (run, cycle, slot, attempt), every archive write is
idempotent, and what a cycle does is derived from the archive, so a driver killed at any
point resumes (`llmnas run --resume RUN`) where it stopped: recorded candidates are not
generated again, admitted ones without a result are evaluated, nothing is recorded twice.
The random stream is keyed, not sequential: parent and sampling seed of a slot come from
(run seed, cycle, slot), a cycle's mode quota from (run seed, cycle), so a resumed run draws
what the uninterrupted one would have.

The driver is the only writer of the archive: actors return typed results (`Answer`,
`EvalRecord`, `FinetuneResult`, `WarmStart`), the driver records them. It keeps the run's
state in memory (the evaluations recorded so far, E_{t-1}, the last cycle's settings, the
cycle's recorded attempts, the adapters) and reads it from the archive once when a run
resumes; the archive stays the source of truth.

Where each step lives: cluster/cycle.py (settings, slots, keyed streams, the in-memory
evaluations, spans), cluster/generation_phase.py (steps 2-4), cluster/studies.py (the
studies and the reliability gate), cluster/finetune_phase.py (theta_0, steps 6-7).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path

from cluster.cycle import (
    SEED_CYCLE,
    Evaluations,
    Settings,
    Slot,
    SpanLog,
    deal_parents,
    keyed_rng,
)
from cluster.factory import Actors
from cluster.finetune_phase import Adapters
from cluster.generation_phase import GenerationPhase
from cluster.progress import Mark, PhaseClock, Progress, now_mark
from cluster.studies import Studies
from db.contract import ArchiveStore, Elite
from llmnas_dist.admission.novelty import NoveltyIndex
from llmnas_dist.admission.pipeline import Admission
from llmnas_dist.config import Config
from llmnas_dist.evaluation.datasets import DatasetSpec, dataset_spec
from llmnas_dist.evaluation.recipe import Recipe
from llmnas_dist.generation.prompts import choose_modes, parent_prompt
from llmnas_dist.seeds import seed_population
from llmnas_dist.vocab import CandidateStatus, Mode

log = logging.getLogger(__name__)

PLACEMENT_FILE = "placement.json"


def reuse_recipe(cfg: Config, actors: Actors | None) -> str | None:
    """The fingerprint of the recipe the evaluators train with, when earlier runs' results
    may be taken for it (evaluation.reuse; not without a pool to train the rest)."""
    if not cfg.evaluation.reuse or actors is None:
        return None
    return Recipe.from_config(cfg.evaluation, device=actors.pool.device_kind).fingerprint


class Driver:
    """Runs (or resumes) one CE run against one archive with one set of actors."""

    def __init__(
        self,
        cfg: Config,
        archive: ArchiveStore,
        run_id: str,
        actors: Actors,
        clock: PhaseClock | None = None,
    ) -> None:
        self.cfg = cfg
        self.clock = clock or PhaseClock()
        self.archive = archive
        self.run_id = run_id
        self.actors = actors
        self.spec: DatasetSpec = dataset_spec(cfg.ce.dataset).at_size(cfg.evaluation.input_size)
        # the seed programs of cycle 0 and the warm start (ce.seeds, at most ce.seed_sample)
        self.seeds = seed_population(cfg.ce)
        self.index = NoveltyIndex.from_config(cfg.admission)
        self.run_dir = Path(cfg.cluster.run_dir).resolve() / run_id
        # what the driver keeps in memory (read from the archive on first use)
        self.evals = Evaluations(archive, run_id, reuse_recipe(cfg, actors))
        self.elites: list[Elite] | None = None  # E_{t-1}: the last completed cycle's
        self.settings: Settings | None = None  # the last started cycle's
        self.spans = SpanLog(archive, run_id)  # busy spans, under the running cycle
        self.adapters = Adapters(cfg, archive, run_id, actors, self.spec, self.spans, self.run_dir)
        self.phase = GenerationPhase(
            cfg,
            archive,
            run_id,
            actors,
            self.spec,
            self.index,
            self.evals,
            self.spans,
            self.adapters,
        )
        self.admission = self.phase.admission
        self.studies = Studies(
            cfg, archive, run_id, self.spec, self.evals, actors, self.phase.on_evaluated
        )
        if actors is not None:  # None: unit tests of the driver's bookkeeping alone
            actors.pool.on_span = self.spans.record

    @property
    def progress(self) -> Progress:
        return self.phase.progress

    # ---- the run --------------------------------------------------------------------------

    def run(self) -> None:
        self.prepare()
        first = (self.archive.last_completed_cycle(self.run_id) or 0) + 1
        for t in range(first, self.cfg.ce.cycles + 1):
            self.run_cycle(t)

    def prepare(self) -> None:
        """Everything before cycle 1: index, seeds (cycle 0), theta_0 on the generators."""
        added = self.index.rebuild(self.archive.iter_signatures())
        log.info("novelty index: %d archived programs", added)
        if self.archive.last_completed_cycle(self.run_id) is None:
            with self.clock.phase("cycle 0: evaluate the seeds"):
                self.evaluate_seeds()
        self.adapters.restore()
        if self.adapters.version is None and self.cfg.generation.warm_start:
            with self.clock.phase("warm start (theta_0)"):
                self.adapters.warm_start(self.seeds)
        self.write_placement()

    def write_placement(self) -> None:
        """`<run_dir>/<run>/placement.json`: the node and GPU ids of every actor (the
        evaluators: every one that started so far), for users and the placement test."""
        actors = self.actors
        places = {
            "generators": [self.spans.place(g) for g in actors.generators],
            "finetuner": [self.spans.place(actors.finetuner)],
            "evaluators": actors.pool.places,
        }
        data = {group: [asdict(w) for w in ws] for group, ws in places.items()}
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / PLACEMENT_FILE).write_text(json.dumps(data, indent=1), encoding="utf-8")

    def run_cycle(self, t: int) -> None:
        started = now_mark()
        settings = self.start(t)
        if t > 1:
            with self.clock.phase(f"cycle {t - 1}: fine-tune, load adapter"):
                self.update_adapter(t - 1)  # steps 6-7 of cycle t-1
        slots = self.parents(t)  # step 1
        generating = now_mark()  # after the fine-tune: its own phase, not counted twice
        self.phase.run(t, slots, settings)  # steps 2-4
        self.time_generation(t, generating)
        with self.clock.phase(f"cycle {t}: studies"):
            self.studies.run(t, settings)
        with self.clock.phase(f"cycle {t}: select"):
            gamma, elites = self.select()  # step 5
            self.complete(t, gamma, elites)
        self.summarize(t, gamma, elites, time.monotonic() - started.at)

    def update_adapter(self, t: int) -> None:
        """Steps 6-7 of cycle t: the CE update on E_t (trained once: a resumed run finds it
        recorded) and the generators on it."""
        adapter = self.adapters.finetune(t, self.previous_elites(t + 1))
        if adapter is not None and adapter[0] != self.adapters.version:
            self.adapters.load(*adapter)

    def time_generation(self, t: int, started: Mark) -> None:
        """Steps 2-4 as two phases: until the last answer (evaluators run alongside), and
        the evaluations still running after it."""
        now = now_mark()
        answered = self.phase.last_answer_at or started
        if not started.at <= answered.at <= now.at:
            answered = started
        self.clock.add(f"cycle {t}: generate + admit (evaluating alongside)", started, answered)
        self.clock.add(f"cycle {t}: evaluate after the last answer", answered, now)
        self.phase.last_answer_at = None

    # ---- cycle start: scaling and settings ------------------------------------------------

    def start(self, t: int) -> Settings:
        """Apply a pending `llmnas scale`, open cycle t, and read or decide its settings."""
        run = self.archive.get_run(self.run_id)
        target = run.evaluators_target
        if target is not None and target != len(self.actors.pool.actors):
            log.info("scaling evaluators %d -> %d", len(self.actors.pool.actors), target)
            self.actors.pool.resize(target)
        previous = self.settings or self.stored_settings(t - 1)
        decided = self.studies.gate(previous)
        cycle = self.archive.start_cycle(
            self.run_id, t, len(self.actors.pool.actors), decided.to_dict()
        )
        self.spans.cycle = t
        stored = Settings.from_dict(cycle.settings) if cycle.settings else None
        settings = stored or decided
        self.settings = stored  # the next cycle's previous (None: the config's, as stored)
        durations = self.archive.durations(self.spec.name, settings.budget)
        self.actors.pool.deadlines.observe_all(self.spec.name, settings.budget, durations)
        self.phase.progress = Progress(t, self.cfg.ce.candidates_per_cycle)
        if settings.budget != run.budget:
            self.studies.rebudget(t, self.previous_elites(t), settings)
        return settings

    def stored_settings(self, t: int) -> Settings:
        """Cycle t's settings as the archive has them (on resume), else the config's."""
        for cycle in self.archive.cycles(self.run_id):
            if cycle.t == t and cycle.settings:
                return Settings.from_dict(cycle.settings)
        ev = self.cfg.evaluation
        return Settings(ev.seeds, ev.epochs, ev.budget_s)

    # ---- cycle 0: the seed programs -------------------------------------------------------

    def evaluate_seeds(self) -> None:
        """Cycle 0: admit (validity only: they may already be archived by other runs) and
        evaluate the seed programs; E_0 is selected from them."""
        settings = self.start(SEED_CYCLE)
        seeds = sorted(self.seeds.items())
        self.progress.planned = len(seeds)
        done = {c.slot: c for c in self.archive.candidates(self.run_id, cycle=SEED_CYCLE)}
        for i, (_name, code) in enumerate(seeds):
            cand = done.get(i)
            if cand is None or cand.status is CandidateStatus.GENERATED:
                cid = self.archive.add_candidate(
                    self.run_id, SEED_CYCLE, i, mode=Mode.FULL, raw_output=code
                )
                fresh = Admission(
                    self.cfg.admission, self.spec, NoveltyIndex.from_config(self.cfg.admission)
                )
                self.phase.judge(cid, fresh.admit_program(code))
                cand = self.archive.get_candidate(cid)
            self.progress.generated += 1
            self.phase.resume_candidate(cand, settings)
        self.phase.drain()
        self.studies.run(SEED_CYCLE, settings)
        gamma, elites = self.select()
        self.complete(SEED_CYCLE, gamma, elites)
        self.summarize(SEED_CYCLE, gamma, elites, 0.0)

    # ---- step 1: parents ------------------------------------------------------------------

    def parents(self, t: int) -> list[Slot]:
        """A parent from E_{t-1} per slot and the cycle's modes as a quota, drawn from
        (seed, t), dealt per mode by `deal_parents`: with `ce.parent_alpha` 0 without
        replacement (a shuffled E_{t-1} dealt round: two children of one parent in one cycle
        tend to be near each other, and with replacement 4 delta slots over 4 elites repeat a
        parent 91% of the time); above 0 the better ranks propose more often, by quota."""
        elites = self.previous_elites(t)
        if not elites:
            raise RuntimeError(
                f"cycle {t - 1} left no elite to propose from: no seed program was evaluated "
                "successfully on this dataset (see `llmnas archive failures`)"
            )
        seed, frac = self.cfg.ce.stream_seed, self.cfg.generation.delta_fraction
        n = self.cfg.ce.candidates_per_cycle
        modes = choose_modes(keyed_rng(seed, "mode", t), n, frac, t)
        alpha = self.cfg.ce.parent_alpha
        decks = {
            m: deal_parents(elites, modes.count(m), alpha, keyed_rng(seed, "parent", t, m))
            for m in Mode
        }
        slots = []
        for i, mode in enumerate(modes):
            parent = decks[mode][modes[:i].count(mode)]
            prompt = parent_prompt(mode, parent.code, self.spec, parent.score)
            slots.append(Slot(t, i, mode, prompt, parent.hash, parent.code))
        return slots

    def previous_elites(self, t: int) -> list[Elite]:
        """E_{t-1}: kept since its cycle completed; on resume, its snapshot in the archive."""
        if self.elites is None:
            for cycle in self.archive.cycles(self.run_id):
                if cycle.t == t - 1:
                    self.elites = [
                        Elite(
                            rank,
                            e["hash"],
                            e["score"],
                            e["n_seeds"],
                            self.archive.get_architecture(e["hash"]).code,
                        )
                        for rank, e in enumerate(cycle.elites or [], 1)
                    ]
                    break
            else:
                raise RuntimeError(
                    f"cycle {t - 1} of run {self.run_id} is missing from the archive"
                )
        return self.elites

    # ---- steps 5 and 7: select, complete --------------------------------------------------

    def select(self) -> tuple[float | None, list[Elite]]:
        """gamma_t and E_t: the top-rho share of everything this run evaluated."""
        return self.archive.elites(self.run_id, self.cfg.ce.rho, min_elites=self.cfg.ce.min_elites)

    def complete(self, t: int, gamma: float | None, elites: list[Elite]) -> None:
        """Cycle t is done: its gamma_t and E_t (the next cycle's parents) in the archive."""
        self.archive.complete_cycle(self.run_id, t, gamma, len(elites), elites)
        self.elites = elites

    def summarize(self, t: int, gamma: float | None, elites: list[Elite], seconds: float) -> None:
        mean = sum(e.score for e in elites) / len(elites) if elites else math.nan
        best = elites[0].score if elites else math.nan
        g = "-" if gamma is None else f"{gamma:.4f}"
        print(
            f"cycle {t} done: generated {self.progress.generated}, admitted "
            f"{self.progress.admitted}, evaluated {self.progress.done}, gamma_t {g}, "
            f"best {best:.4f}, elite mean {mean:.4f}, |E_t| {len(elites)}, "
            f"adapter v{self.adapters.version}, {seconds:.0f} s",
            flush=True,
        )
