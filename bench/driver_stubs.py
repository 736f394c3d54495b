"""Named fakes for the driver's GPU actors: the real driver on a CPU machine, for benches.

These are NOT the system under test and never run in `llmnas run`. They stand in for the two
actors that need an LLM, so that `bench/scaling_bench.py driver` can run the real
`cluster.driver.Driver` (real Ray, real SQLite archive, real evaluator actors training on
`digits`, real admission and novelty) without a GPU or a model:

- `StubGenerationActor` stands in for the GPU vLLM engine (`workers.generator.
  GenerationActor`): it answers each prompt with a programmatic mutation of its parent
  (`llmnas_dist.generation.mutations.novel_mutation`), written as a delta (delta mode) or
  as the whole program (full mode), after a sleep proportional to the tokens a real engine
  would decode: a batch decodes in parallel, so a call takes (its longest answer's tokens) /
  `tokens_per_s`.
  Answers are capped at the config's token budgets like the real engine's (a capped answer
  is cut, and admission rejects it). Tokens are estimated at `CHARS_PER_TOKEN`.
- `StubFinetuneActor` stands in for `workers.finetuner.FinetuneActor`: `train` returns the
  current adapter unchanged (the first time, a placeholder adapter folder marked as a stub),
  after `seconds` of sleep (0 by default). The bench runs with `generation.warm_start:
  false`, so `warm_start` is not called; it returns a placeholder too.

Both honour the interface the driver uses: `generate(requests, seed, alone)` returns one
`Answer` per request (llmnas_dist/generation/engine.py: the `GenerationResult` fields, key,
mode, adapter, grammar_note and the call's span); `install_adapter(name, files)`;
`train(...)` returns a `FinetuneResult` and `warm_start(...)` a `WarmStart`; both have
`where() -> Where`. Every answer and adapter is marked `stub` (the `Stub*` subclasses).
The answers ignore the grammar the driver sends (they are not sampled, so `constrained` is
False); the mutation is seeded by (call seed, request key), so a run draws the same answers
again.
"""

from __future__ import annotations

import json
import random
import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from llmnas_dist.config import FinetuneConfig, GenerationConfig
from llmnas_dist.generation.engine import Answer
from llmnas_dist.generation.finetune import FinetuneResult
from llmnas_dist.generation.mutations import novel_mutation
from llmnas_dist.generation.prompts import delta_answer, full_answer, training_delta
from llmnas_dist.generation.warmstart import WarmStart
from llmnas_dist.spans import Where
from workers.generator import GenRequest
from workers.gpus import locate

# SmolLM2's tokenizer measured on these answers: 2.6 characters per token for deltas, 3.0
# for whole programs (novel mutations of the 15 shipped seeds)
CHARS_PER_TOKEN = 2.8
DEFAULT_TOKENS_PER_S = 400.0  # per sequence; a batch's sequences decode side by side
MUTATION_TRIES = 4  # draws of novel_mutation before the stub gives up on a parent
STUB_NOTE = "placeholder adapter written by bench/driver_stubs.py: no weights, not trained"
_PARENT = re.compile(r"```python\n(.*?)\n```", re.S)  # the parent, as parent_prompt puts it


@dataclass(frozen=True)
class StubAnswer(Answer):
    """An answer of the stub engine (not sampled)."""

    stub: bool = True


@dataclass(frozen=True)
class StubFinetuneResult(FinetuneResult):
    """The stub fine-tuner's result: nothing was trained (no loss: None)."""

    stub: bool = True


@dataclass(frozen=True)
class StubWarmStart(WarmStart):
    """The stub's theta_0: a placeholder (no loss: None)."""

    stub: bool = True


def parent_of(prompt: str) -> str | None:
    """The parent program a delta/full prompt (or a retry prompt around one) shows."""
    m = _PARENT.search(prompt)
    return m.group(1) + "\n" if m else None


def tokens(text: str) -> int:
    return max(1, round(len(text) / CHARS_PER_TOKEN)) if text else 0


def write_stub_adapter(folder: Path) -> str:
    """A folder the driver can ship to generators like an adapter (no weights)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps({"stub": True, "note": STUB_NOTE}))
    return str(folder)


class StubGeneration:
    """FAKE generation engine (see the module docstring): mutations, timed like decoding."""

    def __init__(
        self,
        cfg: GenerationConfig,
        tokens_per_s: float = DEFAULT_TOKENS_PER_S,
        max_lora_rank: int = 32,
        logical_gpus: bool = False,
    ) -> None:
        if tokens_per_s <= 0:
            raise ValueError(f"tokens_per_s must be > 0, got {tokens_per_s}")
        self.cfg = cfg
        self.tokens_per_s = tokens_per_s
        self.place = locate([], logical_gpus, "stub generation actor")
        self.adapter: str | None = None
        self._adapter_root: Path | None = None

    def where(self) -> Where:
        return self.place

    def set_adapter(self, adapter: str | None) -> None:
        self.adapter = adapter

    def install_adapter(self, name: str, files: dict[str, bytes]) -> str:
        """Keep the shipped files like the real actor does (they are not loaded)."""
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
            raise ValueError(f"bad adapter name {name!r}")
        if self._adapter_root is None:
            self._adapter_root = Path(tempfile.mkdtemp(prefix="llmnas-stub-adapters-"))
        folder = self._adapter_root / name
        folder.mkdir(exist_ok=True)
        for fname, data in files.items():
            (folder / Path(fname).name).write_bytes(data)
        self.adapter = str(folder)
        return str(folder)

    def answer(self, request: GenRequest, seed: int) -> tuple[str, int]:
        """The answer text to one request and the tokens a real engine would decode."""
        parent = parent_of(request.prompt)
        rng = random.Random(f"{seed}:{request.key}")
        child = None
        for _ in range(MUTATION_TRIES if parent else 0):
            m = novel_mutation(parent or "", rng)
            if m is not None:
                child = m.child
                break
        if parent is None or child is None:
            text = full_answer(parent or "")  # no edit found: the parent unchanged (rejected)
        elif request.mode == "full":
            text = full_answer(child)
        else:
            text = delta_answer(training_delta(parent, child))
        full = request.mode == "full"
        budget = self.cfg.max_new_tokens_full if full else self.cfg.max_new_tokens
        n = tokens(text)
        if n > budget:  # the engine stops at its budget: the answer is cut
            text, n = text[: int(budget * CHARS_PER_TOKEN)], budget
        return text, n

    def generate(
        self, requests: Sequence[GenRequest], seed: int, alone: bool = False
    ) -> list[Answer]:
        started = time.time()
        answers = [self.answer(r, seed) for r in requests]
        decode_s = max((n for _, n in answers), default=0) / self.tokens_per_s
        time.sleep(max(0.0, started + decode_s - time.time()))
        ended = time.time()
        return [
            StubAnswer(
                text=text,
                prompt_tokens=tokens(req.prompt),
                output_tokens=n,
                seconds=ended - started,
                constrained=False,  # not sampled: the grammar is not applied
                grammar_note=req.grammar_note,
                key=req.key,
                mode=req.mode,
                adapter=self.adapter,
                started=started,
                ended=ended,
                where=self.place,
            )
            for req, (text, n) in zip(requests, answers, strict=True)
        ]

    def info(self) -> dict[str, Any]:
        return {"backend": "stub", "model_path": None, "adapter": self.adapter}


class StubFinetuner:
    """FAKE fine-tuner (see the module docstring): the adapter stays as it is."""

    def __init__(
        self,
        model: str,
        cfg: FinetuneConfig | None = None,
        logical_gpus: bool = False,
        seconds: float = 0.0,
    ) -> None:
        self.model = model
        self.cfg = cfg
        self.seconds = seconds
        self.place = locate([], logical_gpus, "stub fine-tuning actor")
        self.calls = 0

    def where(self) -> Where:
        return self.place

    def progress(self) -> None:
        """No steps: the stub trains nothing."""
        return None

    def train(
        self,
        elites: Sequence[Any],
        dataset: str,
        out_dir: str,
        version: int,
        seed: int = 0,
        init_adapter: str | None = None,
    ) -> FinetuneResult:
        """The current adapter unchanged (a placeholder the first time), as a
        `FinetuneResult` with nothing trained."""
        started = time.time()
        self.calls += 1
        path = init_adapter if init_adapter else write_stub_adapter(Path(out_dir))
        time.sleep(self.seconds)
        return StubFinetuneResult(
            adapter_dir=path,
            base_model=self.model,
            base_model_path="(stub)",
            examples=len(elites),
            train_loss=None,  # type: ignore[arg-type]
            first_loss=None,  # type: ignore[arg-type]
            steps=0,
            seconds=time.time() - started,
            version=version,
        )

    def warm_start(self, *args: Any, **kwargs: Any) -> WarmStart:
        path = write_stub_adapter(Path(tempfile.mkdtemp(prefix="llmnas-stub-ws-")))
        return StubWarmStart(path, False, 0, None, 0.0, "stub")  # type: ignore[arg-type]


StubGenerationActor = ray.remote(StubGeneration)
StubFinetuneActor = ray.remote(StubFinetuner)
