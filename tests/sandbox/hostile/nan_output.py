# ruff: noqa  (hostile test data, deliberately bad code)
# attempts: return NaN logits
# expect-static: -
# expect-runtime: nan_output
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.fc = nn.Linear(in_shape[1] * in_shape[2] * in_shape[3], out_shape[0])

    def forward(self, x):
        x = x * float("nan")
        return self.fc(x.flatten(1))
