"""GenerationActor: a thin Ray actor around one generation engine (vLLM or transformers).

The engine loads once per actor; each cycle's LoRA adapter is swapped in with
`set_adapter` (vLLM: a new LoRARequest, no engine restart). Placement: on a cluster with
GPUs the actor asks for `tensor_parallel_size` GPUs (one vLLM engine spans them); without
GPUs it asks for none and runs on CPUs.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray

from llmnas_dist.config import GenerationConfig
from llmnas_dist.errors import ConfigError, PlacementError
from llmnas_dist.generation.engine import Answer, make_generator
from llmnas_dist.generation.sampling import Sampling
from llmnas_dist.spans import Where
from workers.gpus import assigned_gpus, locate
from workers.threads import node_threads

if TYPE_CHECKING:
    from llmnas_dist.admission.finished import AnswerTarget


@dataclass(frozen=True)
class GenRequest:
    """One prompt to answer; results come back under `key` (the caller's candidate id)."""

    key: str
    prompt: str
    mode: str = "delta"
    grammar: str | None = None  # Lark grammar the answer is sampled under (None: freely)
    grammar_note: str | None = None  # why a grammar was wanted but not built
    retry: bool = False  # asked again after a rejection: sampled at the retry temperature
    parent: str | None = None  # the program the answer edits (its lines are judged against it)
    target: AnswerTarget | None = None  # what its program must build for (redraw_builds)


def generation_options(
    cfg: GenerationConfig, cluster_resources: dict[str, float], num_cpus: float = 1.0
) -> dict[str, Any]:
    """Ray actor options: tensor_parallel_size GPUs where the cluster has GPUs, else none."""
    gpus = cluster_resources.get("GPU", 0.0)
    if gpus and cfg.tensor_parallel_size > gpus:
        raise ConfigError(
            f"generation.tensor_parallel_size={cfg.tensor_parallel_size} exceeds the "
            f"cluster's {gpus:g} GPUs"
        )
    return {
        "num_gpus": float(cfg.tensor_parallel_size) if gpus else 0.0,
        "num_cpus": num_cpus,
        "max_restarts": 0,
    }


class Generation:
    """The actor's body (a plain class, so it also runs without Ray)."""

    def __init__(
        self, cfg: GenerationConfig, max_lora_rank: int = 32, logical_gpus: bool = False
    ) -> None:
        self.cfg = cfg
        self.place = locate(assigned_gpus(), logical_gpus, "generation actor")
        if self.place.problem:
            raise PlacementError(self.place.problem)
        self.engine = make_generator(cfg, max_lora_rank=max_lora_rank)
        self.adapter: str | None = None
        self._adapter_root: Path | None = None

    def set_adapter(self, adapter: str | None) -> None:
        """Use this LoRA adapter folder from now on (None: the base model)."""
        if adapter is not None and not (Path(adapter) / "adapter_config.json").is_file():
            raise ConfigError(f"not a LoRA adapter folder: {adapter}")
        self.adapter = adapter

    def install_adapter(self, name: str, files: dict[str, bytes]) -> str:
        """Write an adapter shipped as files (from another node) into this actor's folder
        and use it from now on; returns the local path."""
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
            raise ValueError(f"bad adapter name {name!r}")
        bad = [f for f in files if not re.fullmatch(r"[A-Za-z0-9_.-]{1,128}", f)]
        if bad:
            raise ValueError(f"adapter file names must be plain names, got {bad}")
        if self._adapter_root is None:
            self._adapter_root = Path(tempfile.mkdtemp(prefix="llmnas-adapters-"))
        folder = self._adapter_root / name
        folder.mkdir(exist_ok=True)
        for fname, data in files.items():
            (folder / fname).write_bytes(data)
        self.set_adapter(str(folder))
        return str(folder)

    def generate(
        self, requests: Sequence[GenRequest], seed: int, alone: bool = False
    ) -> list[Answer]:
        """Answer a batch with the current adapter; one `Answer` per request, in order.
        `alone`: no evaluation runs beside this call, so torch may take every core of the
        node (else it stays on the actor's one thread: workers/threads.py measured why)."""
        # a batch with a full-mode request gets the full-program token budget, one of
        # retries the retry temperature (the driver batches each kind apart)
        mode = "full" if any(r.mode == "full" for r in requests) else "delta"
        retry = any(r.retry for r in requests)
        started = time.time()
        with node_threads() if alone else contextlib.nullcontext():
            results = self.engine.generate(
                [r.prompt for r in requests],
                Sampling.from_config(self.cfg, seed, mode, retry),
                self.adapter,
                grammars=[r.grammar for r in requests],
                parents=[r.parent for r in requests],
                targets=[r.target for r in requests],
            )
        ended = time.time()
        return [
            Answer.of(
                res,
                key=req.key,
                mode=req.mode,
                adapter=self.adapter,
                grammar_note=res.grammar_note or req.grammar_note,
                started=started,  # the whole call's span (the same for every answer of it)
                ended=ended,
                where=self.place,
            )
            for req, res in zip(requests, results, strict=True)
        ]

    def where(self) -> Where:
        return self.place

    def info(self) -> dict[str, Any]:
        return {
            "backend": self.cfg.backend,
            "model_path": self.engine.model_path,
            "adapter": self.adapter,
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()] if ray.is_initialized() else [],
            "pid": os.getpid(),
        }


GenerationActor = ray.remote(Generation)
