# ruff: noqa  (hostile test data, deliberately bad code)
# attempts: random is allowed: move the canary away through the os module random keeps privately
# expect-static: forbidden_call
# expect-runtime: ok,build_failed
import random
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        random._os.replace("CANARY_PATH", "moved")
        self.fc = nn.Linear(in_shape[1] * in_shape[2] * in_shape[3], out_shape[0])

    def forward(self, x):
        return self.fc(x.flatten(1))
