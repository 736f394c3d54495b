# ruff: noqa  (hostile test data, deliberately bad code)
# attempts: return (batch, classes + 1)
# expect-static: -
# expect-runtime: shape_mismatch
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.fc = nn.Linear(in_shape[1] * in_shape[2] * in_shape[3], out_shape[0] + 1)

    def forward(self, x):
        return self.fc(x.flatten(1))
