# ruff: noqa  (hostile test data, deliberately bad code)
# attempts: unbounded recursion in forward
# expect-static: -
# expect-runtime: build_failed
import torch
from torch import nn


def down(n):
    return down(n + 1)


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.fc = nn.Linear(in_shape[1] * in_shape[2] * in_shape[3], out_shape[0])

    def forward(self, x):
        down(0)
        return self.fc(x.flatten(1))
