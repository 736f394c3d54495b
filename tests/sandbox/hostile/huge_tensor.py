# ruff: noqa  (hostile test data, deliberately bad code)
# attempts: allocate a 4 TB tensor
# expect-static: -
# expect-runtime: out_of_memory
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.fc = nn.Linear(in_shape[1] * in_shape[2] * in_shape[3], out_shape[0])
        self.big = torch.zeros(1 << 40)

    def forward(self, x):
        return self.fc(x.flatten(1))
