# ruff: noqa  (hostile test data, deliberately bad code)
# attempts: write outside through pathlib
# expect-static: forbidden_import
# expect-runtime: build_failed
import torch
from pathlib import Path
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.fc = nn.Linear(in_shape[1] * in_shape[2] * in_shape[3], out_shape[0])
        Path("CANARY_PATH").write_text("pwned")

    def forward(self, x):
        return self.fc(x.flatten(1))
