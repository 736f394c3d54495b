"""Where actors run and when they are busy: the `Where` record every actor reports, and the
busy-span record (one interval during which one actor was busy) with its vocabulary.

Shared by every layer: the actors and the driver write spans (cluster/, workers/), the
archive stores and returns them (db/, table `spans`), the analysis turns them into
timelines, busy shares and scaling advice (llmnas_dist/analysis/timeline.py). It lives
here, beside llmnas_dist/vocab.py, so that db needs nothing of the analysis to store one;
it imports nothing of the project.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Where:
    """An actor's place in the cluster, as it reports it (workers/gpus.py finds it out)."""

    actor: str  # Ray actor id, or pid-N outside an actor
    node_id: str | None
    gpu_ids: tuple[str, ...]
    pid: int
    problem: str | None = None  # why this actor must not run (GPUs CUDA cannot see)

    @property
    def gpu_id(self) -> str | None:
        return ",".join(self.gpu_ids) or None


class SpanKind(str, enum.Enum):
    """What an actor was busy with."""

    GENERATE = "generate"  # one generation call (a batch of prompts)
    ADMIT = "admit"  # the driver's admission of one answer (parse, checks, novelty)
    EVALUATE = "evaluate"  # one attempt at one candidate's evaluation (one seed)
    STUDY = "study"  # an evaluation of the noise or reference study
    FINETUNE = "finetune"  # the CE update (LoRA on the elites)
    WARM_START = "warm_start"  # theta_0 before cycle 1


class ActorGroup(str, enum.Enum):
    GENERATOR = "generator"
    EVALUATOR = "evaluator"
    FINETUNER = "finetuner"
    DRIVER = "driver"


class SpanOutcome(str, enum.Enum):
    OK = "ok"  # finished and returned (a rejected program is still an ok admission)
    FAILED = "failed"  # returned a failure (the program's, or the actor raised)
    LOST = "lost"  # the actor died (killed, OOM, its node lost) while holding it


GROUP_OF_KIND = {
    SpanKind.GENERATE: ActorGroup.GENERATOR,
    SpanKind.ADMIT: ActorGroup.DRIVER,
    SpanKind.EVALUATE: ActorGroup.EVALUATOR,
    SpanKind.STUDY: ActorGroup.EVALUATOR,
    SpanKind.FINETUNE: ActorGroup.FINETUNER,
    SpanKind.WARM_START: ActorGroup.FINETUNER,
}


@dataclass(frozen=True)
class Span:
    """One busy interval of one actor."""

    kind: str  # a SpanKind value
    actor: str  # Ray actor id (or "driver")
    started: float  # Unix seconds
    ended: float
    node_id: str | None = None
    gpu_id: str | None = None
    outcome: str = SpanOutcome.OK.value
    key: str | None = None  # the candidate or evaluation it served
    attempt: int = 1
    cycle: int | None = None
    message: str | None = None

    def __post_init__(self) -> None:
        SpanKind(self.kind)
        SpanOutcome(self.outcome)
        if not (math.isfinite(self.started) and math.isfinite(self.ended)):
            raise ValueError(f"span times must be finite, got {self.started}..{self.ended}")
        if self.ended < self.started:
            raise ValueError(f"span ends before it starts: {self.started} > {self.ended}")

    @property
    def group(self) -> str:
        return GROUP_OF_KIND[SpanKind(self.kind)].value

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    def at(self, cycle: int) -> Span:
        return replace(self, cycle=cycle)
