"""The CE driver: one cycle is the named steps of DESIGN.md, read top to bottom.

    prepare      run row, novelty index from the whole archive, the seed programs as
                 cycle 0 (evaluated, E_0 selected), the warm-start adapter theta_0
    run_cycle(t)
      1 parents  E_{t-1} (the snapshot stored with cycle t-1) -> a parent and a mode per slot
      2 generate \\  pipelined: generation batches stream into admission, admitted programs
      3 admit     > stream into the evaluator pool; a rejected delta is asked again with its
      4 evaluate /  error fed back (bounded); evaluators never wait for a whole batch
        studies  extra seeds / a longer reference budget for a sample (proxy reliability)
      5 select   gamma_t and E_t from the archive (elitist over the whole run)
      6 finetune LoRA on E_t: (parent prompt -> delta to the elite), from the last adapter
      7 swap     generation actors load the new adapter; cycle t marked completed

Exactly once: every candidate id is (run, cycle, slot, attempt), every archive write is
idempotent, and what a cycle does is derived from the archive, so a driver killed at any
point resumes (`llmnas run --resume RUN`) where it stopped: recorded candidates are not
generated again, admitted ones without a result are evaluated, nothing is recorded twice.
The random stream is keyed, not sequential: parent and sampling seed of a slot come from
(run seed, cycle, slot), a cycle's mode quota from (run seed, cycle), so a resumed run draws
what the uninterrupted one would have.

The driver is the only writer of the archive: actors return results, the driver records.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
import zlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError

from cluster.factory import Actors, adapter_files, start_generator
from cluster.pool import PoolResult, archive_recorder
from cluster.progress import Mark, PhaseClock, Progress, TrainingProgress, now_mark
from db.archive import Archive, Elite
from db.models import Candidate, CandidateStatus, Mode
from llmnas_dist.admission.delta import feedback_for
from llmnas_dist.admission.grammar import answer_grammar
from llmnas_dist.admission.novelty import MINHASH_SCHEME, MINHASH_SEED, NoveltyIndex
from llmnas_dist.admission.pipeline import Admission, Verdict
from llmnas_dist.analysis.diagnostics import noise_gate
from llmnas_dist.analysis.timeline import Span, SpanKind, SpanOutcome
from llmnas_dist.config import Config
from llmnas_dist.errors import CandidateRejected, ErrorClass
from llmnas_dist.evaluation.datasets import DatasetSpec, dataset_spec
from llmnas_dist.generation.finetune import ElitePair
from llmnas_dist.generation.prompts import choose_modes, parent_prompt, retry_prompt
from llmnas_dist.seeds import seed_population
from llmnas_dist.vocab import budget_key
from workers.evaluator import EvalTask
from workers.generator import GenRequest
from workers.gpus import Where, locate

log = logging.getLogger(__name__)

SEED_CYCLE = 0  # the seed programs, evaluated before the first CE cycle
WAIT_S = 1.0  # longest wait for any result before the progress line is redrawn
DONE = (CandidateStatus.EVALUATED, CandidateStatus.FAILED)
PLACEMENT_FILE = "placement.json"
MAX_GENERATOR_RESTARTS = 3  # generation actors replaced in a run before it stops


def keyed_rng(seed: int, *key: object) -> random.Random:
    """A random stream named by its key: the same (seed, key) draws the same numbers in
    any process, in any order."""
    return random.Random(":".join(str(k) for k in (seed, *key)))


def keyed_seed(seed: int, *key: object) -> int:
    return zlib.crc32(":".join(str(k) for k in (seed, *key)).encode()) & 0x7FFFFFFF


@dataclass(frozen=True)
class Settings:
    """What one cycle evaluates with (stored with the cycle, so a resume reuses it)."""

    seeds: int
    epochs: float | None
    budget_s: float | None
    gate: dict[str, Any] = field(default_factory=dict)

    @property
    def budget(self) -> str:
        return budget_key(self.epochs, self.budget_s)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seeds": self.seeds,
            "epochs": self.epochs,
            "budget_s": self.budget_s,
            "budget": self.budget,
            "gate": self.gate,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Settings:
        return cls(d["seeds"], d.get("epochs"), d.get("budget_s"), d.get("gate") or {})


@dataclass(frozen=True)
class Slot:
    """One proposal position of a cycle: its parent, mode and prompt."""

    t: int
    index: int
    mode: str
    prompt: str
    parent_hash: str | None = None
    parent_code: str | None = None


@dataclass
class Call:
    """One generation call in flight: (slot, attempt, prompt) triples sent together, and
    what re-sends it unchanged (same keyed seed) if its actor is lost."""

    items: list[tuple[Slot, int, str]]
    requests: list[GenRequest] = field(default_factory=list)
    seed: int = 0
    actor: int = 0  # index into the generation actors
    sent: float = 0.0  # Unix seconds


class Driver:
    """Runs (or resumes) one CE run against one archive with one set of actors."""

    def __init__(
        self,
        cfg: Config,
        archive: Archive,
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
        self.admission = Admission(cfg.admission, self.spec, self.index)
        self.record = archive_recorder(archive, run_id)
        self.adapter_version: int | None = None
        self.adapter_path: str | None = None
        self.run_dir = Path(cfg.cluster.run_dir).resolve() / run_id
        # evaluation bookkeeping of the running cycle: candidate id -> seeds still out
        self._pending: dict[str, set[int]] = {}
        self._ok: dict[str, bool] = {}
        self._calls: dict[Any, Call] = {}
        self._grammars: dict[tuple[str, str], tuple[str | None, str | None]] = {}  # per parent
        self._next_gen = 0
        self._last_answer_at: Mark | None = None  # when the cycle's last generation returned
        self.progress = Progress(0, 0)
        # utilisation: every busy span goes to the archive under the running cycle
        self._cycle = SEED_CYCLE
        self._places: dict[Any, Where] = {}  # actor handle -> where it runs
        self._restarts = 0  # generation actors replaced after they were lost
        self.here = locate([], False, "driver")
        if actors is not None:  # None: unit tests of the driver's bookkeeping alone
            actors.pool.on_span = self.record_span

    def record_span(self, span: Span) -> None:
        self.archive.record_spans(self.run_id, [span.at(self._cycle)])

    def place(self, actor: Any) -> Where:
        """Where an actor runs (asked once; call it while the actor is idle)."""
        if actor not in self._places:
            self._places[actor] = ray.get(actor.where.remote())
        return self._places[actor]

    def actor_span(
        self, kind: SpanKind, actor: Any, started: float, key: str | None = None
    ) -> None:
        """The span of a call the driver waited for on `actor` (fine-tune, warm start)."""
        where = self.place(actor)
        self.record_span(
            Span(
                kind.value, where.actor, started, time.time(), where.node_id, where.gpu_id, key=key
            )
        )

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
        self.restore_adapter()
        if self.adapter_version is None and self.cfg.generation.warm_start:
            with self.clock.phase("warm start (theta_0)"):
                self.warm_start()
        self.write_placement()

    def write_placement(self) -> None:
        """`<run_dir>/<run>/placement.json`: the node and GPU ids of every actor (the
        evaluators: every one that started so far), for users and the placement test."""
        actors = self.actors
        places = {
            "generators": [self.place(g) for g in actors.generators],
            "finetuner": [self.place(actors.finetuner)],
            "evaluators": actors.pool.places,
        }
        data = {group: [asdict(w) for w in ws] for group, ws in places.items()}
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / PLACEMENT_FILE).write_text(json.dumps(data, indent=1), encoding="utf-8")

    def run_cycle(self, t: int) -> None:
        started = now_mark()
        settings = self.start(t)
        slots = self.parents(t)  # step 1
        self.generate_admit_evaluate(t, slots, settings)  # steps 2-4
        self.time_generation(t, started)
        with self.clock.phase(f"cycle {t}: studies"):
            self.studies(t, settings)
        with self.clock.phase(f"cycle {t}: select, fine-tune, load adapter"):
            gamma, elites = self.select()  # step 5
            adapter = self.finetune(t, elites)  # step 6
            self.swap(t, adapter, gamma, elites)  # step 7
        self.summarize(t, gamma, elites, time.monotonic() - started.at)

    def time_generation(self, t: int, started: Mark) -> None:
        """Steps 2-4 as two phases: until the last answer (evaluators run alongside), and
        the evaluations still running after it."""
        now = now_mark()
        answered = self._last_answer_at or started
        if not started.at <= answered.at <= now.at:
            answered = started
        self.clock.add(f"cycle {t}: generate + admit (evaluating alongside)", started, answered)
        self.clock.add(f"cycle {t}: evaluate after the last answer", answered, now)
        self._last_answer_at = None

    # ---- cycle start: scaling and settings ------------------------------------------------

    def start(self, t: int) -> Settings:
        """Apply a pending `llmnas scale`, open cycle t, and read or decide its settings."""
        target = self.archive.get_run(self.run_id).evaluators_target
        if target is not None and target != len(self.actors.pool.actors):
            log.info("scaling evaluators %d -> %d", len(self.actors.pool.actors), target)
            self.actors.pool.resize(target)
        previous = self.cycle_settings(t - 1)
        decided = self.reliability_gate(previous)
        cycle = self.archive.start_cycle(
            self.run_id, t, len(self.actors.pool.actors), decided.to_dict()
        )
        self._cycle = t
        settings = Settings.from_dict(cycle.settings) if cycle.settings else decided
        durations = self.archive.durations(self.spec.name, settings.budget)
        self.actors.pool.deadlines.observe_all(self.spec.name, settings.budget, durations)
        self.progress = Progress(t, self.cfg.ce.candidates_per_cycle)
        if settings.budget != self.archive.get_run(self.run_id).budget:
            self.change_budget(t, settings)
        return settings

    def change_budget(self, t: int, settings: Settings) -> None:
        """The gate raised the proxy budget: scores at different budgets are not comparable,
        so the run is ranked at the new one from now on and E_{t-1} is re-evaluated at it."""
        log.warning("cycle %d: proxy budget is now %s", t, settings.budget)
        self.archive.set_run_budget(self.run_id, settings.budget)
        have = {
            (e.arch_hash, e.seed)
            for e in self.archive.evaluations(self.run_id)
            if e.budget == settings.budget
        }
        tasks = [
            EvalTask(
                key=f"rebudget:{t}:{e['hash']}#{seed}",
                code=self.archive.get_architecture(e["hash"]).code,
                dataset=self.spec.name,
                seed=seed,
                epochs=settings.epochs,
                budget_s=settings.budget_s,
                arch_hash=e["hash"],
            )
            for e in self.previous_elites(t)
            for seed in range(settings.seeds)
            if (e["hash"], seed) not in have
        ]
        self.actors.pool.run(tasks, self.on_evaluated)

    def cycle_settings(self, t: int) -> Settings:
        for cycle in self.archive.cycles(self.run_id):
            if cycle.t == t and cycle.settings:
                return Settings.from_dict(cycle.settings)
        ev = self.cfg.evaluation
        return Settings(ev.seeds, ev.epochs, ev.budget_s)

    # ---- cycle 0: the seed programs, and theta_0 ------------------------------------------

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
                self.judge(cid, fresh.admit_program(code))
                cand = self.archive.get_candidate(cid)
            self.progress.generated += 1
            self.resume_candidate(cand, settings)
        self.drain()
        self.studies(SEED_CYCLE, settings)
        gamma, elites = self.select()
        self.archive.complete_cycle(self.run_id, SEED_CYCLE, gamma, len(elites), elites)
        self.summarize(SEED_CYCLE, gamma, elites, 0.0)

    def warm_start(self) -> None:
        """theta_0: LoRA on programmatic mutations of the seeds (cached across runs)."""
        log.info("warm start: training theta_0 (cached after the first run)")
        started = time.time()
        ws = self.await_training(
            self.actors.finetuner.warm_start.remote(
                self.cfg.generation,
                self.cfg.admission,
                self.cfg.ce.dataset,
                self.seeds,
                self.cfg.evaluation.input_size,
            ),
            "warm start",
        )
        self.actor_span(SpanKind.WARM_START, self.actors.finetuner, started)
        self.archive.record_adapter(
            self.run_id,
            SEED_CYCLE,
            0,
            path=ws["path"],
            base_model=self.cfg.generation.model,
            n_examples=int(ws["n_examples"]),
            train_loss=ws.get("train_loss"),
        )
        log.info(
            "warm start: %s (%s, %d examples)",
            ws["path"],
            "cached" if ws.get("cached") else f"trained in {ws.get('seconds', 0):.0f} s",
            ws["n_examples"],
        )
        self.load_adapter(0, ws["path"])

    def restore_adapter(self) -> None:
        """On resume: the generators get the run's latest adapter again."""
        adapters = self.archive.adapters(self.run_id)
        if adapters:
            self.load_adapter(adapters[-1].version, adapters[-1].path)

    def load_adapter(self, version: int, path: str) -> None:
        """Ship the adapter's files from the fine-tuner's node to every generator."""
        files = adapter_files(self.actors.finetuner, path)
        ray.get([g.install_adapter.remote(f"v{version}", files) for g in self.actors.generators])
        self.adapter_version, self.adapter_path = version, path

    # ---- step 1: parents ------------------------------------------------------------------

    def parents(self, t: int) -> list[Slot]:
        """A parent from E_{t-1} per slot, drawn from (seed, t, slot); the cycle's modes as
        a quota drawn from (seed, t)."""
        elites = self.previous_elites(t)
        if not elites:
            raise RuntimeError(
                f"cycle {t - 1} left no elite to propose from: no seed program was evaluated "
                "successfully on this dataset (see `llmnas archive failures`)"
            )
        codes = {e["hash"]: self.archive.get_architecture(e["hash"]).code for e in elites}
        seed, frac = self.cfg.ce.seed, self.cfg.generation.delta_fraction
        n = self.cfg.ce.candidates_per_cycle
        modes = choose_modes(keyed_rng(seed, "mode", t), n, frac)
        slots = []
        for i, mode in enumerate(modes):
            parent = keyed_rng(seed, "parent", t, i).choice(elites)
            code = codes[parent["hash"]]
            prompt = parent_prompt(mode, code, self.spec, parent["score"])
            slots.append(Slot(t, i, mode, prompt, parent["hash"], code))
        return slots

    def previous_elites(self, t: int) -> list[dict[str, Any]]:
        for cycle in self.archive.cycles(self.run_id):
            if cycle.t == t - 1:
                return list(cycle.elites or [])
        raise RuntimeError(f"cycle {t - 1} of run {self.run_id} is missing from the archive")

    # ---- steps 2-4: generate, admit, evaluate (pipelined) ---------------------------------

    def generate_admit_evaluate(self, t: int, slots: list[Slot], settings: Settings) -> None:
        """Send the cycle's generation batches, then react to whatever finishes first:
        a batch is admitted and its programs queued to evaluators at once."""
        recorded: dict[int, list[Candidate]] = {}
        for cand in self.archive.candidates(self.run_id, cycle=t):
            recorded.setdefault(cand.slot, []).append(cand)
        size = self.cfg.generation.batch_size
        # one mode per batch: a full answer's token budget is longer than a delta's, and a
        # batch decodes until its longest answer ends
        for mode in ("delta", "full"):
            same = [s for s in slots if s.mode == mode]
            for start in range(0, len(same), size):
                batch = same[start : start + size]
                if any(s.index not in recorded for s in batch):
                    self.request([(s, 0, s.prompt) for s in batch], (t, batch[0].index, 0))
        retries = []
        for slot in slots:
            attempts = recorded.get(slot.index, [])
            self.progress.generated += bool(attempts)
            if attempts:
                retries += self.resume_slot(slot, attempts[-1], settings)
        self.retry(retries)
        self.drain(settings)

    def request(self, items: list[tuple[Slot, int, str]], key: tuple[int, int, int]) -> None:
        """One generation call, to the next generation actor in turn; its sampling seed is
        named by (cycle, first slot, attempt)."""
        index = self._next_gen % len(self.actors.generators)
        self._next_gen += 1
        requests = [
            GenRequest(
                f"{slot.index}:{attempt}", prompt, slot.mode, *self.grammar(slot), attempt > 0
            )
            for slot, attempt, prompt in items
        ]
        seed = keyed_seed(self.cfg.ce.seed, "generate", *key)
        self.send(Call(items, requests, seed, index, time.time()))

    def send(self, call: Call) -> None:
        actor = self.actors.generators[call.actor]
        alone = not self.actors.pool.busy()  # no evaluation beside it: all cores
        self._calls[actor.generate.remote(call.requests, call.seed, alone)] = call

    def resend(self, call: Call, exc: Exception) -> None:
        """A generation actor died holding `call`: a fresh actor (with the run's adapter)
        answers the same requests with the same seed. Bounded: an actor that cannot start
        (its placement fails) stops the run."""
        self._restarts += 1
        if self._restarts > MAX_GENERATOR_RESTARTS:
            raise RuntimeError(
                f"generation actors lost {self._restarts} times; last: {exc}"
            ) from exc
        log.warning("generation actor %d lost (%s): restarting it", call.actor, type(exc).__name__)
        self.record_span(
            Span(
                SpanKind.GENERATE.value,
                f"generator-{call.actor}",
                call.sent,
                time.time(),
                outcome=SpanOutcome.LOST.value,
                key=call.requests[0].key,
                message=str(exc)[:500],
            )
        )
        self.actors.generators[call.actor] = start_generator(self.cfg)
        if self.adapter_version is not None and self.adapter_path is not None:
            files = adapter_files(self.actors.finetuner, self.adapter_path)
            fresh = self.actors.generators[call.actor]
            ray.get(fresh.install_adapter.remote(f"v{self.adapter_version}", files))
        self.send(replace(call, sent=time.time()))

    def grammar(self, slot: Slot) -> tuple[str | None, str | None]:
        """The grammar of the slot's answer and why there is none (generation.constrained;
        built once per parent and mode)."""
        gen = self.cfg.generation
        if not gen.constrained:
            return None, None
        key = (slot.parent_hash or "", slot.mode)
        if key not in self._grammars:
            grammar, why_not = answer_grammar(slot.mode, slot.parent_code or "")
            if why_not:
                log.warning("parent %s: %s", (slot.parent_hash or "?")[:12], why_not)
            self._grammars[key] = grammar, why_not
        return self._grammars[key]

    def drain(self, settings: Settings | None = None) -> None:
        """Until nothing is generating or evaluating: take the next finished result."""
        pool = self.actors.pool
        while self._calls or pool.busy():
            ready, _ = ray.wait([*self._calls, *pool.refs()], num_returns=1, timeout=WAIT_S)
            for ref in ready:
                if ref in self._calls:
                    call = self._calls.pop(ref)
                    try:
                        answers = ray.get(ref)
                    except (ActorDiedError, ActorUnavailableError) as exc:
                        self.resend(call, exc)
                        continue
                    self.on_generated(call, answers, settings)
                    self._last_answer_at = now_mark()
                else:
                    item = pool.collect(ref)
                    if item is not None:
                        self.on_evaluated(item)
            self.progress.evaluating = len(self._pending)
            self.progress.show()
        self.progress.show(final=True)

    def on_generated(
        self, call: Call, results: list[dict[str, Any]], settings: Settings | None
    ) -> None:
        """Record each answer, admit it, queue the admitted, retry rejected deltas."""
        if settings is None:
            raise RuntimeError("generation results outside a CE cycle")
        recorded = {
            (c.slot, c.attempt)
            for c in self.archive.candidates(self.run_id, cycle=call.items[0][0].t)
        }
        self.generation_span(call, results)
        retries = []
        for (slot, attempt, prompt), res in zip(call.items, results, strict=True):
            if (slot.index, attempt) in recorded:
                continue  # a resumed batch regenerated a slot that was already recorded
            cid = self.archive.add_candidate(
                self.run_id,
                slot.t,
                slot.index,
                attempt=attempt,
                mode=slot.mode,
                prompt=prompt,
                raw_output=res["text"],
                parent_hash=slot.parent_hash,
                adapter_version=self.adapter_version,
                output_tokens=res.get("output_tokens"),
                constrained=bool(res.get("constrained")),
            )
            self.progress.generated += attempt == 0
            admitting = time.time()
            verdict = self.admission.admit(
                res["text"],
                slot.mode,  # type: ignore[arg-type]
                slot.parent_code,
                unanswered=res.get("error"),
                note=res.get("grammar_note"),
            )
            here = self.here
            self.record_span(
                Span(SpanKind.ADMIT.value, "driver", admitting, time.time(), here.node_id, key=cid)
            )
            self.judge(cid, verdict)
            if verdict.admitted:
                self.queue(cid, verdict.code_hash or "", verdict.canonical or "", settings)
            elif self.retryable(slot, attempt, verdict.error_class):
                retries.append((slot, attempt + 1, self.retry_text(prompt, res["text"], verdict)))
        self.retry(retries)

    def generation_span(self, call: Call, results: list[dict[str, Any]]) -> None:
        """The call's span as its actor timed it."""
        timed = results[0].get("call") if results else None
        if timed is None:
            return
        where: Where = timed["where"]
        self.record_span(
            Span(
                SpanKind.GENERATE.value,
                where.actor,
                timed["started"],
                timed["ended"],
                where.node_id,
                where.gpu_id,
                key=results[0].get("key"),
            )
        )

    def judge(self, cid: str, verdict: Verdict) -> None:
        """Archive the admission verdict of one candidate (admitted programs with it)."""
        if verdict.admitted:
            self.archive.admit_candidate(
                cid,
                verdict.canonical or "",
                signature=verdict.signature,
                num_perm=self.cfg.admission.num_perm,
                seed=MINHASH_SEED,
                scheme=MINHASH_SCHEME,
                shingle_size=self.cfg.admission.shingle_size,
                param_count=verdict.param_count,
                nearest_hash=verdict.nearest_hash,
                nearest_jaccard=verdict.nearest_jaccard,
                message=verdict.message,
            )
            if verdict.code_hash and verdict.signature:
                self.index.add(verdict.code_hash, verdict.signature)
            self.progress.admitted += 1
        else:
            self.archive.update_candidate_status(
                cid,
                CandidateStatus.REJECTED,
                error_class=verdict.error_class,
                message=verdict.message,
                nearest_hash=verdict.nearest_hash,
                nearest_jaccard=verdict.nearest_jaccard,
            )

    def retryable(self, slot: Slot, attempt: int, error_class: str | None) -> bool:
        # a prompt too long to answer: the retry prompt (with the answer) would be longer
        too_long = error_class == ErrorClass.PROMPT_TOO_LONG
        return slot.mode == "delta" and attempt < self.cfg.generation.max_retries and not too_long

    @staticmethod
    def retry_text(prompt: str, answer: str, verdict: Any) -> str:
        rejection = CandidateRejected(ErrorClass(verdict.error_class), verdict.message or "")
        return retry_prompt(prompt, answer, feedback_for(rejection))

    def retry(self, items: list[tuple[Slot, int, str]]) -> None:
        """Ask again, with the error fed back; one call per (cycle, first slot, attempt)."""
        if items:
            slot, attempt, _ = items[0]
            self.request(items, (slot.t, slot.index, attempt))

    def resume_slot(self, slot: Slot, last: Candidate, settings: Settings) -> list:
        """Carry a recorded slot on from its last attempt's state (after a restart)."""
        if last.status is CandidateStatus.GENERATED:
            verdict = self.admission.admit(last.raw_output, slot.mode, slot.parent_code)  # type: ignore[arg-type]
            self.judge(last.id, verdict)
            if verdict.admitted:
                self.queue(last.id, verdict.code_hash or "", verdict.canonical or "", settings)
                return []
            last = self.archive.get_candidate(last.id)
        if last.status is CandidateStatus.REJECTED:
            if self.retryable(slot, last.attempt, last.error_class):
                text = self.retry_text(last.prompt, last.raw_output, last)
                return [(slot, last.attempt + 1, text)]
            return []
        self.resume_candidate(last, settings)
        return []

    def resume_candidate(self, cand: Candidate, settings: Settings) -> None:
        """An admitted candidate without all of its results goes (back) to the evaluators."""
        if cand.status in (CandidateStatus.ADMITTED, CandidateStatus.EVALUATING):
            code = self.archive.get_architecture(cand.arch_hash or "").code
            self.queue(cand.id, cand.arch_hash or "", code, settings)
        elif cand.status in DONE:
            self.progress.done += 1

    def queue(self, cid: str, arch_hash: str, code: str, settings: Settings) -> None:
        """Send the candidate's missing (seed) evaluations to the pool."""
        have = {
            e.seed: e.score
            for e in self.archive.evaluations(self.run_id, arch_hash)
            if e.budget == settings.budget and e.dataset == self.spec.name
        }
        missing = [s for s in range(settings.seeds) if s not in have]
        self._ok[cid] = any(v is not None for v in have.values())
        if not missing:
            self.finish_candidate(cid)
            return
        self.archive.update_candidate_status(cid, CandidateStatus.EVALUATING)
        self._pending[cid] = set(missing)
        self.actors.pool.submit(
            EvalTask(
                key=f"{cid}#{seed}",
                code=code,
                dataset=self.spec.name,
                seed=seed,
                epochs=settings.epochs,
                budget_s=settings.budget_s,
                arch_hash=arch_hash,
                candidate_id=cid,
            )
            for seed in missing
        )

    def on_evaluated(self, item: PoolResult) -> None:
        """Record one result; a candidate is finished when all of its seeds are in."""
        self.record(item)
        cid = item.task.candidate_id or ""
        ok = bool(item.result.get("ok"))
        if ok:
            self.progress.score(item.result.get("accuracy"))
        if cid not in self._pending:
            return  # a study evaluation, not a candidate's own
        self._ok[cid] = self._ok.get(cid, False) or ok
        self._pending[cid].discard(item.task.seed)
        if not self._pending[cid]:
            del self._pending[cid]
            self.finish_candidate(cid, item.result)

    def finish_candidate(self, cid: str, last: dict[str, Any] | None = None) -> None:
        ok = self._ok.pop(cid, False)
        if ok:
            self.archive.update_candidate_status(cid, CandidateStatus.EVALUATED)
        else:
            last = last or {}
            self.archive.update_candidate_status(
                cid,
                CandidateStatus.FAILED,
                error_class=last.get("error_class") or ErrorClass.CRASHED,
                message=last.get("message") or "every evaluation failed",
            )
        self.progress.done += 1

    # ---- proxy-reliability studies and the gate -------------------------------------------

    def studies(self, t: int, settings: Settings) -> None:
        """Top up the noise study (k seeds for a sample) and the reference study (a longer
        budget for a sample) from this cycle's evaluated programs."""
        ev = self.cfg.evaluation
        evaluated = [
            c
            for c in self.archive.candidates(self.run_id, cycle=t, statuses=["evaluated"])
            if c.arch_hash
        ]
        tasks: list[EvalTask] = []
        if ev.noise_sample >= 2:
            tasks += self.study_tasks(evaluated, t, "noise", ev.noise_sample, settings, None)
        if ev.reference_sample >= 1:
            tasks += self.study_tasks(
                evaluated, t, "reference", ev.reference_sample, settings, ev.reference_epochs
            )
        if tasks:
            log.info("cycle %d: %d study evaluations", t, len(tasks))
            self.actors.pool.run(tasks, self.on_evaluated)

    def study_tasks(
        self,
        evaluated: list[Candidate],
        t: int,
        study: str,
        sample: int,
        settings: Settings,
        epochs: float | None,
    ) -> list[EvalTask]:
        budget = settings.budget if epochs is None else budget_key(epochs, None)
        seeds = range(self.cfg.evaluation.noise_seeds) if epochs is None else range(1)
        rows = [e for e in self.archive.evaluations(self.run_id) if e.budget == budget]
        studied = {e.arch_hash for e in rows if e.seed == max(seeds)}
        room = max(0, sample - len(studied))
        fresh = sorted({c.arch_hash: c for c in evaluated if c.arch_hash not in studied}.items())
        chosen = keyed_rng(self.cfg.ce.seed, study, t).sample(fresh, min(room, len(fresh)))
        have = {(e.arch_hash, e.seed) for e in rows}
        tasks = []
        for arch_hash, cand in sorted(chosen):
            code = self.archive.get_architecture(arch_hash).code
            for seed in seeds:
                if (arch_hash, seed) not in have:
                    tasks.append(
                        EvalTask(
                            key=f"{study}:{cand.id}#{seed}",
                            code=code,
                            dataset=self.spec.name,
                            seed=seed,
                            epochs=epochs if epochs is not None else settings.epochs,
                            budget_s=None if epochs is not None else settings.budget_s,
                            arch_hash=arch_hash,
                            candidate_id=cand.id,
                            kind=SpanKind.STUDY.value,
                        )
                    )
        return tasks

    def reliability_gate(self, previous: Settings) -> Settings:
        """SNR of the noise study so far; below the threshold: warn, and if configured add
        a seed or raise the budget for cycle t."""
        rows = [
            (e.arch_hash, e.seed, e.score)
            for e in self.archive.evaluations(self.run_id)
            if e.budget == previous.budget and e.dataset == self.spec.name
        ]
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

    # ---- steps 5-7: select, finetune, swap ------------------------------------------------

    def select(self) -> tuple[float | None, list[Elite]]:
        """gamma_t and E_t: the top-rho share of everything this run evaluated."""
        return self.archive.elites(self.run_id, self.cfg.ce.rho, min_elites=self.cfg.ce.min_elites)

    def await_training(self, ref: Any, label: str) -> Any:
        """The result of a fine-tuner call; while it trains, its step, loss and ETA on one
        live line (a first run's warm start is its longest phase: minutes of silence
        otherwise). A call that returns within one poll (a cached adapter) shows nothing."""
        line = TrainingProgress(label)
        finetuner = self.actors.finetuner
        shown = False
        while not ray.wait([ref], timeout=WAIT_S)[0]:
            line.step = ray.get(finetuner.progress.remote())
            line.show()
            shown = True
        if shown:  # end the live line with the last step
            line.step = ray.get(finetuner.progress.remote())
            line.show(final=True)
        return ray.get(ref)

    def finetune(self, t: int, elites: list[Elite]) -> tuple[int, str] | None:
        """The CE update: LoRA on (parent -> elite) pairs, from the current adapter.
        None when no elite has a parent yet (the seeds): the adapter stays."""
        done = {a.version: a for a in self.archive.adapters(self.run_id)}
        if t in done:
            return t, done[t].path
        origins = self.archive.origins(self.run_id, [e.hash for e in elites])
        pairs = [
            ElitePair(self.archive.get_architecture(origins[e.hash]).code, e.code)
            for e in elites
            if e.hash in origins
        ]
        if not pairs:
            log.info("cycle %d: no elite was proposed from a parent yet; adapter unchanged", t)
            return None
        out = str(self.run_dir / "adapters" / f"v{t:03d}")
        started = time.time()
        meta = self.await_training(
            self.actors.finetuner.train.remote(
                pairs, self.spec.name, out, t, self.cfg.ce.seed + t, self.adapter_path
            ),
            f"cycle {t}: fine-tune",
        )
        self.actor_span(SpanKind.FINETUNE, self.actors.finetuner, started)
        self.archive.record_adapter(
            self.run_id,
            t,
            t,
            path=meta["adapter_dir"],
            base_model=self.cfg.generation.model,
            n_examples=int(meta["examples"]),
            train_loss=meta.get("train_loss"),
        )
        return t, meta["adapter_dir"]

    def swap(
        self, t: int, adapter: tuple[int, str] | None, gamma: float | None, elites: list[Elite]
    ) -> None:
        if adapter is not None and adapter[0] != self.adapter_version:
            self.load_adapter(*adapter)
        self.archive.complete_cycle(self.run_id, t, gamma, len(elites), elites)

    def summarize(self, t: int, gamma: float | None, elites: list[Elite], seconds: float) -> None:
        mean = sum(e.score for e in elites) / len(elites) if elites else math.nan
        best = elites[0].score if elites else math.nan
        g = "-" if gamma is None else f"{gamma:.4f}"
        print(
            f"cycle {t} done: generated {self.progress.generated}, admitted "
            f"{self.progress.admitted}, evaluated {self.progress.done}, gamma_t {g}, "
            f"best {best:.4f}, elite mean {mean:.4f}, |E_t| {len(elites)}, "
            f"adapter v{self.adapter_version}, {seconds:.0f} s",
            flush=True,
        )


def _budget(s: Settings) -> tuple[float | None, float | None]:
    return s.epochs, s.budget_s


def _raised(s: Settings, factor: float) -> tuple[float | None, float | None]:
    if s.epochs is not None:
        return s.epochs * factor, None
    return None, (s.budget_s or 0.0) * factor


def unfinished(candidates: Iterable[Candidate]) -> list[str]:
    """Ids of candidates left in a non-final state (for tests and `llmnas run` checks)."""
    final = {CandidateStatus.REJECTED, *DONE}
    return [c.id for c in candidates if c.status not in final]
