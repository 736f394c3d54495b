# ruff: noqa  (hostile test data, deliberately bad code)
# attempts: write outside through a symlink made inside the workdir
# expect-static: forbidden_import
# expect-runtime: build_failed
import torch
import os
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.fc = nn.Linear(in_shape[1] * in_shape[2] * in_shape[3], out_shape[0])
        os.symlink("CANARY_PATH", "link")
        open("link", "w").write("pwned")

    def forward(self, x):
        return self.fc(x.flatten(1))
