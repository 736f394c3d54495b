"""Steps 2-4 of a cycle, pipelined: generate, admit, evaluate.

Generation batches stream into admission and admitted programs stream into the evaluator
pool: the driver reacts to whichever result finishes first (`drain`), so evaluators never
wait for a whole batch. A rejected delta is asked again with its error fed back (bounded by
`generation.max_retries`); a generation actor lost mid-call is replaced and its call sent
again with the same keyed seed.

What this phase keeps in memory, so that it asks the archive nothing per batch or per
candidate (the archive stays the source of truth: on resume it is read once):
- the (slot, attempt) pairs recorded in the running cycle: a resumed batch that
  regenerates a recorded slot is not recorded twice;
- the run's evaluations (`Evaluations`, cluster/cycle.py): which seeds of a candidate are
  in at the cycle's budget;
- per candidate in evaluation, the seeds still out and whether one succeeded.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError

from cluster.cycle import Evaluations, Settings, Slot, SpanLog, keyed_seed
from cluster.factory import Actors, start_generator
from cluster.finetune_phase import Adapters
from cluster.pool import PoolResult, archive_recorder
from cluster.progress import Mark, Progress, now_mark
from db.contract import ArchiveStore
from db.models import Candidate
from llmnas_dist.admission.delta import feedback_for
from llmnas_dist.admission.finished import AnswerTarget
from llmnas_dist.admission.grammar import answer_grammar
from llmnas_dist.admission.novelty import MINHASH_SCHEME, MINHASH_SEED, NoveltyIndex
from llmnas_dist.admission.pipeline import Admission, Verdict
from llmnas_dist.config import Config
from llmnas_dist.errors import NOVELTY_CLASSES, CandidateRejected, ErrorClass
from llmnas_dist.evaluation.datasets import DatasetSpec
from llmnas_dist.evaluation.evaluate import EvalRecord
from llmnas_dist.generation.engine import Answer
from llmnas_dist.generation.prompts import retry_prompt
from llmnas_dist.spans import Span, SpanKind, SpanOutcome
from llmnas_dist.vocab import CandidateStatus
from workers.evaluator import EvalTask
from workers.generator import GenRequest
from workers.gpus import locate

log = logging.getLogger(__name__)

WAIT_S = 1.0  # longest wait for any result before the progress line is redrawn
DONE = (CandidateStatus.EVALUATED, CandidateStatus.FAILED)
MAX_GENERATOR_RESTARTS = 3  # generation actors replaced in a run before it stops

Item = tuple[Slot, int, str]  # (slot, attempt, prompt)


@dataclass
class Call:
    """One generation call in flight: (slot, attempt, prompt) triples sent together, and
    what re-sends it unchanged (same keyed seed) if its actor is lost."""

    items: list[Item]
    requests: list[GenRequest] = field(default_factory=list)
    seed: int = 0
    actor: int = 0  # index into the generation actors
    sent: float = 0.0  # Unix seconds


class GenerationPhase:
    """Generation calls and evaluations in flight, and what each result leads to."""

    def __init__(
        self,
        cfg: Config,
        archive: ArchiveStore,
        run_id: str,
        actors: Actors,
        spec: DatasetSpec,
        index: NoveltyIndex,
        evals: Evaluations,
        spans: SpanLog,
        adapters: Adapters,
    ) -> None:
        self.cfg = cfg
        self.archive = archive
        self.run_id = run_id
        self.actors = actors
        self.spec = spec
        self.index = index
        self.admission = Admission(cfg.admission, spec, index)
        # what a finished answer is built for before it is returned (generation.redraw_builds)
        self.target = (
            AnswerTarget(spec.in_shape, spec.num_classes, cfg.admission)
            if cfg.generation.redraw_builds
            else None
        )
        self.evals = evals
        self.spans = spans
        self.adapters = adapters
        self.record = archive_recorder(archive, run_id)
        self.progress = Progress(0, 0)
        self.last_answer_at: Mark | None = None  # when the cycle's last generation returned
        self.calls: dict[Any, Call] = {}
        self._pending: dict[str, set[int]] = {}  # candidate id -> seeds still out
        self._ok: dict[str, bool] = {}  # candidate id -> one of its seeds succeeded
        self._recorded: tuple[int, set[tuple[int, int]]] | None = None  # (cycle, attempts)
        self._grammars: dict[tuple[str, str], tuple[str | None, str | None]] = {}  # per parent
        self._codes: dict[str, str] = {}  # archived programs read for `target_of`
        self._next_gen = 0
        self._restarts = 0  # generation actors replaced after they were lost
        self.here = locate([], False, "driver")

    # ---- the cycle's recorded attempts ---------------------------------------------------

    def recorded(self, t: int) -> set[tuple[int, int]]:
        """(slot, attempt) of every candidate recorded in cycle t (read once per cycle)."""
        if self._recorded is None or self._recorded[0] != t:
            cands = self.archive.candidates(self.run_id, cycle=t)
            self._recorded = t, {(c.slot, c.attempt) for c in cands}
        return self._recorded[1]

    def run(self, t: int, slots: list[Slot], settings: Settings) -> None:
        """Send the cycle's generation batches, then react to whatever finishes first:
        a batch is admitted and its programs queued to evaluators at once. Slots recorded
        before a restart carry on from their last attempt instead."""
        by_slot: dict[int, list[Candidate]] = {}
        cands = self.archive.candidates(self.run_id, cycle=t)
        for cand in cands:
            by_slot.setdefault(cand.slot, []).append(cand)
        self._recorded = t, {(c.slot, c.attempt) for c in cands}
        size = self.cfg.generation.batch_size
        # one mode per batch: a full answer's token budget is longer than a delta's, and a
        # batch decodes until its longest answer ends
        for mode in ("delta", "full"):
            same = [s for s in slots if s.mode == mode]
            for start in range(0, len(same), size):
                batch = same[start : start + size]
                if any(s.index not in by_slot for s in batch):
                    self.request([(s, 0, s.prompt) for s in batch], (t, batch[0].index, 0))
        retries = []
        for slot in slots:
            attempts = by_slot.get(slot.index, [])
            self.progress.generated += bool(attempts)
            if attempts:
                retries += self.resume_slot(slot, attempts[-1], settings)
        self.retry(retries)
        self.drain(settings)

    # ---- generation calls ----------------------------------------------------------------

    def request(self, items: list[Item], key: tuple[int, int, int]) -> None:
        """One generation call, to the next generation actor in turn; its sampling seed is
        named by (cycle, first slot, attempt)."""
        index = self._next_gen % len(self.actors.generators)
        self._next_gen += 1
        requests = [
            GenRequest(
                f"{slot.index}:{attempt}",
                prompt,
                slot.mode,
                *self.grammar(slot),
                attempt > 0,
                slot.parent_code,
                self.target_of(slot),
            )
            for slot, attempt, prompt in items
        ]
        seed = keyed_seed(self.cfg.ce.stream_seed, "generate", *key)
        self.send(Call(items, requests, seed, index, time.time()))

    def target_of(self, slot: Slot) -> AnswerTarget | None:
        """What the slot's answer must meet before it is returned (generation.redraw_builds):
        build for the dataset, and differ from the archived programs near its parent (and
        not write again the lines they added, once it is a near-copy)."""
        if self.target is None or not self.cfg.generation.built(slot.mode):
            return None
        return self.target.near(self.index, slot.parent_hash, slot.parent_code or "", self.code_of)

    def code_of(self, code_hash: str) -> str:
        """An archived program's code (read once: archived programs never change)."""
        if code_hash not in self._codes:
            self._codes[code_hash] = self.archive.get_architecture(code_hash).code
        return self._codes[code_hash]

    def send(self, call: Call) -> None:
        actor = self.actors.generators[call.actor]
        alone = not self.actors.pool.busy()  # no evaluation beside it: all cores
        self.calls[actor.generate.remote(call.requests, call.seed, alone)] = call

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
        self.spans.record(
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
        self.adapters.install(self.actors.generators[call.actor])
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
        while self.calls or pool.busy():
            ready, _ = ray.wait([*self.calls, *pool.refs()], num_returns=1, timeout=WAIT_S)
            for ref in ready:
                if ref in self.calls:
                    call = self.calls.pop(ref)
                    try:
                        answers = ray.get(ref)
                    except (ActorDiedError, ActorUnavailableError) as exc:
                        self.resend(call, exc)
                        continue
                    self.on_generated(call, answers, settings)
                    self.last_answer_at = now_mark()
                else:
                    item = pool.collect(ref)
                    if item is not None:
                        self.on_evaluated(item)
            self.progress.evaluating = len(self._pending)
            self.progress.show()
        self.progress.show(final=True)

    # ---- answers: record, admit, queue or retry ------------------------------------------

    def on_generated(self, call: Call, answers: list[Answer], settings: Settings | None) -> None:
        """Record each answer, admit it, queue the admitted, retry rejected deltas."""
        if settings is None:
            raise RuntimeError("generation results outside a CE cycle")
        recorded = self.recorded(call.items[0][0].t)
        self.generation_span(answers)
        retries = []
        for (slot, attempt, prompt), answer in zip(call.items, answers, strict=True):
            if (slot.index, attempt) in recorded:
                continue  # a resumed batch regenerated a slot that was already recorded
            cid = self.archive.add_candidate(
                self.run_id,
                slot.t,
                slot.index,
                attempt=attempt,
                mode=slot.mode,
                prompt=prompt,
                raw_output=answer.text,
                parent_hash=slot.parent_hash,
                adapter_version=self.adapters.version,
                output_tokens=answer.output_tokens,
                constrained=answer.constrained,
            )
            recorded.add((slot.index, attempt))
            self.progress.generated += attempt == 0
            admitting = time.time()
            verdict = self.admission.admit(
                answer.text,
                slot.mode,
                slot.parent_code,
                unanswered=answer.error,
                note=answer.grammar_note,
            )
            self.spans.record(
                Span(
                    SpanKind.ADMIT.value,
                    "driver",
                    admitting,
                    time.time(),
                    self.here.node_id,
                    key=cid,
                )
            )
            self.judge(cid, verdict)
            if verdict.admitted:
                self.queue(cid, verdict.code_hash or "", verdict.canonical or "", settings)
            elif self.retryable(slot, attempt, verdict.error_class):
                retries.append((slot, attempt + 1, self.retry_text(prompt, answer.text, verdict)))
        self.retry(retries)

    def generation_span(self, answers: list[Answer]) -> None:
        """The call's span as its actor timed it (every answer carries it)."""
        first = answers[0] if answers else None
        if first is None or first.where is None:
            return
        where = first.where
        self.spans.record(
            Span(
                SpanKind.GENERATE.value,
                where.actor,
                first.started,
                first.ended,
                where.node_id,
                where.gpu_id,
                key=first.key,
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
        unoriginal = error_class in NOVELTY_CLASSES and not self.cfg.generation.retry_unoriginal
        return (
            slot.mode == "delta"
            and attempt < self.cfg.generation.max_retries
            and not (too_long or unoriginal)
        )

    @staticmethod
    def retry_text(prompt: str, answer: str, verdict: Any) -> str:
        rejection = CandidateRejected(ErrorClass(verdict.error_class), verdict.message or "")
        return retry_prompt(prompt, answer, feedback_for(rejection))

    def retry(self, items: list[Item]) -> None:
        """Ask again, with the error fed back; one call per (cycle, first slot, attempt)."""
        if items:
            slot, attempt, _ = items[0]
            self.request(items, (slot.t, slot.index, attempt))

    def resume_slot(self, slot: Slot, last: Candidate, settings: Settings) -> list[Item]:
        """Carry a recorded slot on from its last attempt's state (after a restart)."""
        if last.status is CandidateStatus.GENERATED:
            verdict = self.admission.admit(last.raw_output, slot.mode, slot.parent_code)
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

    # ---- evaluations: queue, record, finish ----------------------------------------------

    def resume_candidate(self, cand: Candidate, settings: Settings) -> None:
        """An admitted candidate without all of its results goes (back) to the evaluators."""
        if cand.status in (CandidateStatus.ADMITTED, CandidateStatus.EVALUATING):
            code = self.archive.get_architecture(cand.arch_hash or "").code
            self.queue(cand.id, cand.arch_hash or "", code, settings)
        elif cand.status in DONE:
            self.progress.done += 1

    def queue(self, cid: str, arch_hash: str, code: str, settings: Settings) -> None:
        """Send the candidate's missing (seed) evaluations to the pool."""
        have = self.evals.scores(arch_hash, self.spec.name, settings.budget)
        missing = [s for s in range(settings.seeds) if s not in have]
        self._ok[cid] = any(v is not None for v in have.values())
        if not missing:
            self.finish_candidate(cid)
            return
        self.archive.update_candidate_status(cid, CandidateStatus.EVALUATING)
        self._pending[cid] = set(missing)
        reused, fresh = self.evals.reusable(
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
        self.actors.pool.submit(fresh)
        for item in reused:
            self.on_evaluated(item)

    def on_evaluated(self, item: PoolResult) -> None:
        """Record one result; a candidate is finished when all of its seeds are in."""
        self.record(item)
        r = item.result
        self.evals.add(
            item.task.arch_hash or "", r.dataset, r.budget, r.seed, r.accuracy if r.ok else None
        )
        cid = item.task.candidate_id or ""
        if r.ok:
            self.progress.score(r.accuracy)
        self.progress.reused += r.reused_from is not None
        if cid not in self._pending:
            return  # a study evaluation, not a candidate's own
        self._ok[cid] = self._ok.get(cid, False) or r.ok
        self._pending[cid].discard(item.task.seed)
        if not self._pending[cid]:
            del self._pending[cid]
            self.finish_candidate(cid, r)

    def finish_candidate(self, cid: str, last: EvalRecord | None = None) -> None:
        ok = self._ok.pop(cid, False)
        if ok:
            self.archive.update_candidate_status(cid, CandidateStatus.EVALUATED)
        else:
            error_class = last.error_class if last is not None else None
            message = last.message if last is not None else None
            self.archive.update_candidate_status(
                cid,
                CandidateStatus.FAILED,
                error_class=error_class or ErrorClass.CRASHED,
                message=message or "every evaluation failed",
            )
        self.progress.done += 1
