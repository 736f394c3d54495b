# ruff: noqa  (hostile test data, deliberately bad code)
# attempts: numpy is allowed for numerics: read the token file with np.loadtxt and leak it as the output shape
# expect-static: forbidden_call
# expect-runtime: build_failed
import numpy as np
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        text = np.loadtxt("TOKEN_PATH", dtype=str)
        self.fc = nn.Linear(in_shape[1] * in_shape[2] * in_shape[3], out_shape[0] + len(text))

    def forward(self, x):
        return self.fc(x.flatten(1))
