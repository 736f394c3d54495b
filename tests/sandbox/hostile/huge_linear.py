# ruff: noqa  (hostile test data, deliberately bad code)
# attempts: a Linear layer of 10^10 weights (40 GB)
# expect-static: -
# expect-runtime: out_of_memory
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.fc = nn.Linear(in_shape[1] * in_shape[2] * in_shape[3], out_shape[0])
        self.big = nn.Linear(100_000, 100_000)

    def forward(self, x):
        return self.fc(x.flatten(1))
