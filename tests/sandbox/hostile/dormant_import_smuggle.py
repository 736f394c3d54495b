# ruff: noqa  (hostile test data, deliberately bad code)
# attempts: an unused `import os` is allowed: reach the bound module through the namespace (globals, a function's __globals__, vars) and delete the canary
# expect-static: forbidden_call,forbidden_import
# expect-runtime: ok,build_failed
import os
import torch
from torch import nn


def namespace():
    return namespace.__globals__


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        for space in (namespace(), globals(), vars()):
            if "os" in space:
                space["os"].remove("CANARY_PATH")
        self.fc = nn.Linear(in_shape[1] * in_shape[2] * in_shape[3], out_shape[0])

    def forward(self, x):
        return self.fc(x.flatten(1))
