"""What several test modules share: the repository root, the PostgreSQL admin URL and the
inline programs more than one stage's tests train or check. Test modules import this module
(tests/ is on sys.path under pytest); no test module imports another.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_bench(name: str) -> ModuleType:
    """bench/<name>.py as a module: bench/ is not a package. Registered in sys.modules, so
    that Ray can pickle its actor classes and dataclasses work."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"no bench/{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# The server the PostgreSQL cases create their databases on (an admin URL); the default is
# the local trust-auth server.
PG_ADMIN_URL = os.environ.get(
    "LLMNAS_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)

# One linear layer: the smallest program that builds, trains and scores on any dataset.
LINEAR_NET = """
import torch
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.fc = nn.Linear(in_shape[-3] * in_shape[-2] * in_shape[-1], out_shape[0])

    def forward(self, x):
        return self.fc(torch.flatten(x, 1))
"""

# The same network, whose every output is NaN: training must fail with a reason.
NAN_NET = """
import torch
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.fc = nn.Linear(in_shape[-3] * in_shape[-2] * in_shape[-1], out_shape[0])

    def forward(self, x):
        return self.fc(torch.flatten(x, 1)) * float("nan")
"""

# Trains three steps, then its forward never returns: the deadline must stop it.
HANGS_IN_TRAINING = """
import torch
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.fc = nn.Linear(in_shape[-3] * in_shape[-2] * in_shape[-1], out_shape[0])
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        while self.calls > 3:
            pass
        return self.fc(torch.flatten(x, 1))
"""


def net_body(lines: list[str]) -> range:
    """Indices of the lines of `class Net`'s body (blank lines included)."""
    start = next(i for i, line in enumerate(lines) if line.startswith("class Net"))
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i] and not lines[i][0].isspace()),
        len(lines),
    )
    return range(start + 1, end)


def changes_only_net(parent: str, child: str) -> bool:
    """Whether `child` differs from `parent` (non-blank lines) only in `class Net`'s body:
    what a whole-program grammar may change."""
    import difflib

    old = [x for x in parent.splitlines() if x.strip()]
    new = [x for x in child.splitlines() if x.strip()]
    body = net_body(old)
    matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    return all(
        tag == "equal" or (i1 in body or i1 == body.stop) and (i2 - 1 in body or i1 == i2)
        for tag, i1, i2, _, _ in matcher.get_opcodes()
    )
