"""Hand-written seed architectures: the cycle-0 population.

Each `*.py` file in this folder is data, not part of the package's code: a standalone
program that follows the contract (`Net(in_shape, out_shape, prm, device)`) and builds for
any input from 1x8x8 to 3x256x256 and any class count. They are read as text and never
imported by the package; builds happen in the sandbox like any other program.
"""

from __future__ import annotations

from importlib import resources


def load_seeds() -> dict[str, str]:
    """Seed name (file stem) -> program source, sorted by name."""
    folder = resources.files(__name__)
    seeds = {
        entry.name.removesuffix(".py"): entry.read_text(encoding="utf-8")
        for entry in folder.iterdir()
        if entry.name.endswith(".py") and not entry.name.startswith("_")
    }
    return dict(sorted(seeds.items()))
