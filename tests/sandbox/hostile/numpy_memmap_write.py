# ruff: noqa  (hostile test data, deliberately bad code)
# attempts: numpy is allowed for numerics: overwrite the canary through np.memmap
# expect-static: forbidden_call
# expect-runtime: build_failed
import numpy as np
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        view = np.memmap("CANARY_PATH", dtype=np.uint8, mode="r+")
        view[:6] = np.frombuffer(b"pwned!", dtype=np.uint8)
        view.flush()
        self.fc = nn.Linear(in_shape[1] * in_shape[2] * in_shape[3], out_shape[0])

    def forward(self, x):
        return self.fc(x.flatten(1))
