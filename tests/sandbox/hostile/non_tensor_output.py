# ruff: noqa  (hostile test data, deliberately bad code)
# attempts: return a list instead of a tensor
# expect-static: -
# expect-runtime: shape_mismatch
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.n = out_shape[0]

    def forward(self, x):
        return [0.0] * self.n
