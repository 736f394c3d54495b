"""Seed architectures: the cycle-0 population, shipped or brought by the user.

Each `*.py` file in this folder is data, not part of the package's code: a standalone
program that follows the contract (`Net(in_shape, out_shape, prm, device)`) and builds for
any input from 1x8x8 to 3x256x256 and any class count. They are read as text and never
imported by the package; builds happen in the sandbox like any other program. A user's
folder of programs (LEMUR's, say) replaces them through `ce.seeds`.
"""

from __future__ import annotations

import glob
import random
from importlib import resources
from pathlib import Path

from llmnas_dist.config import CEConfig
from llmnas_dist.errors import UsageError


def load_seeds(source: str | None = None) -> dict[str, str]:
    """Seed name (file stem) -> program source, sorted by name: the shipped seeds (None),
    every `*.py` of a folder, or the files a glob matches. A file that is not UTF-8 keeps
    its replacement characters (admission rejects it as a syntax error, naming it)."""
    if source is None:
        folder = resources.files(__name__)
        return dict(
            sorted(
                (entry.name.removesuffix(".py"), entry.read_text(encoding="utf-8"))
                for entry in folder.iterdir()
                if entry.name.endswith(".py") and not entry.name.startswith("_")
            )
        )
    root = Path(source).expanduser()
    if root.is_dir():
        paths = sorted(p for p in root.glob("*.py") if not p.name.startswith("_"))
    else:
        paths = sorted(Path(p) for p in glob.glob(str(root), recursive=True))
    paths = [p for p in paths if p.is_file() and p.suffix == ".py"]
    if not paths:
        raise UsageError(f"no seed programs (*.py) at {source}")
    seeds: dict[str, str] = {}
    for path in paths:
        name = path.stem if path.stem not in seeds else str(path)
        try:
            seeds[name] = path.read_bytes().decode("utf-8", errors="replace")
        except OSError as exc:
            raise UsageError(f"cannot read seed program {path}: {exc}") from None
    return dict(sorted(seeds.items()))


def sample_seeds(seeds: dict[str, str], size: int | None, seed: int) -> dict[str, str]:
    """At most `size` of the seeds, drawn by `seed` (the same run draws the same ones)."""
    if size is None or len(seeds) <= size:
        return seeds
    names = sorted(random.Random(f"seed-sample-{seed}").sample(sorted(seeds), size))
    return {name: seeds[name] for name in names}


def seed_population(ce: CEConfig) -> dict[str, str]:
    """A run's seed programs (cycle 0 and the warm start): ce.seeds, at most ce.seed_sample."""
    return sample_seeds(load_seeds(ce.seeds), ce.seed_sample, ce.stream_seed)
