# ruff: noqa  (hostile test data, deliberately bad code)
# attempts: subprocess reached through __import__ and getattr on built names
# expect-static: forbidden_call
# expect-runtime: ok,build_failed
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.fc = nn.Linear(in_shape[1] * in_shape[2] * in_shape[3], out_shape[0])
        mod = __import__("sub" + "process")
        getattr(mod, "r" + "un")(["sh", "-c", "echo pwned > CANARY_PATH"])

    def forward(self, x):
        return self.fc(x.flatten(1))
