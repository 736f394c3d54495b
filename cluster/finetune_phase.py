"""The run's LoRA adapters: theta_0 (the warm start), the CE update of each cycle (step 6),
and shipping the current one to the generation actors (step 7).

The fine-tuning actor returns typed results (`WarmStart`, `FinetuneResult`); the driver
records them in the archive and remembers which adapter the generators hold. The run's
recorded adapters are read from the archive once (a resumed run's) and then kept in
memory: a cycle whose adapter is already recorded is not trained again.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import ray

from cluster.cycle import SEED_CYCLE, SpanLog
from cluster.factory import Actors, adapter_files
from cluster.progress import TrainingProgress
from db.contract import ArchiveStore, Elite
from llmnas_dist.config import Config
from llmnas_dist.evaluation.datasets import DatasetSpec
from llmnas_dist.generation.finetune import ElitePair, FinetuneResult
from llmnas_dist.generation.warmstart import WarmStart
from llmnas_dist.spans import SpanKind

log = logging.getLogger(__name__)

WAIT_S = 1.0  # how often a training's progress line is redrawn


def await_training(finetuner: Any, ref: Any, label: str) -> Any:
    """The result of a fine-tuner call; while it trains, its step, loss and ETA on one
    live line (a first run's warm start is its longest phase: minutes of silence
    otherwise). A call that returns within one poll (a cached adapter) shows nothing."""
    line = TrainingProgress(label)
    shown = False
    while not ray.wait([ref], timeout=WAIT_S)[0]:
        line.step = ray.get(finetuner.progress.remote())
        line.show()
        shown = True
    if shown:  # end the live line with the last step
        line.step = ray.get(finetuner.progress.remote())
        line.show(final=True)
    return ray.get(ref)


class Adapters:
    """The adapter the generators hold (`version`, `path`), and how each one is made."""

    def __init__(
        self,
        cfg: Config,
        archive: ArchiveStore,
        run_id: str,
        actors: Actors,
        spec: DatasetSpec,
        spans: SpanLog,
        run_dir: Path,
    ) -> None:
        self.cfg = cfg
        self.archive = archive
        self.run_id = run_id
        self.actors = actors
        self.spec = spec
        self.spans = spans
        self.run_dir = run_dir
        self.version: int | None = None
        self.path: str | None = None
        self._recorded: dict[int, str] | None = None  # version -> path, as archived

    def recorded(self) -> dict[int, str]:
        """The run's adapters by version (read from the archive on first use)."""
        if self._recorded is None:
            self._recorded = {a.version: a.path for a in self.archive.adapters(self.run_id)}
        return self._recorded

    def record(self, cycle: int, version: int, path: str, n: int, loss: float | None) -> None:
        self.archive.record_adapter(
            self.run_id,
            cycle,
            version,
            path=path,
            base_model=self.cfg.generation.model,
            n_examples=n,
            train_loss=loss,
        )
        self.recorded().setdefault(version, path)

    def restore(self) -> None:
        """On resume: the generators get the run's latest adapter again."""
        recorded = self.recorded()
        if recorded:
            latest = max(recorded)
            self.load(latest, recorded[latest])

    def warm_start(self, seeds: dict[str, str]) -> None:
        """theta_0: LoRA on programmatic mutations of the seeds (cached across runs)."""
        log.info("warm start: theta_0 (shipped for the default config; else trained, then cached)")
        finetuner = self.actors.finetuner
        started = time.time()
        ws: WarmStart = await_training(
            finetuner,
            finetuner.warm_start.remote(
                self.cfg.generation,
                self.cfg.admission,
                self.cfg.ce.dataset,
                seeds,
                self.cfg.evaluation.input_size,
            ),
            "warm start",
        )
        self.spans.actor_span(SpanKind.WARM_START, finetuner, started)
        self.record(SEED_CYCLE, 0, ws.path, int(ws.n_examples), ws.train_loss)
        log.info(
            "warm start: %s (%s, %d examples)",
            ws.path,
            "cached" if ws.cached else f"trained in {ws.seconds or 0:.0f} s",
            ws.n_examples,
        )
        self.load(0, ws.path)

    def finetune(self, t: int, elites: list[Elite]) -> tuple[int, str] | None:
        """The CE update: LoRA on (parent -> elite) pairs, from the current adapter.
        None when no elite has a parent yet (the seeds): the adapter stays."""
        done = self.recorded()
        if t in done:
            return t, done[t]
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
        finetuner = self.actors.finetuner
        started = time.time()
        meta: FinetuneResult = await_training(
            finetuner,
            finetuner.train.remote(
                pairs, self.spec.name, out, t, self.cfg.ce.stream_seed + t, self.path
            ),
            f"cycle {t}: fine-tune",
        )
        self.spans.actor_span(SpanKind.FINETUNE, finetuner, started)
        self.record(t, t, meta.adapter_dir, int(meta.examples), meta.train_loss)
        return t, meta.adapter_dir

    def load(self, version: int, path: str) -> None:
        """Ship the adapter's files from the fine-tuner's node to every generator."""
        files = adapter_files(self.actors.finetuner, path)
        ray.get([g.install_adapter.remote(f"v{version}", files) for g in self.actors.generators])
        self.version, self.path = version, path

    def install(self, generator: Any) -> None:
        """A fresh generation actor (one replaced after it was lost) gets the current one."""
        if self.version is not None and self.path is not None:
            files = adapter_files(self.actors.finetuner, self.path)
            ray.get(generator.install_adapter.remote(f"v{self.version}", files))
