# ruff: noqa  (hostile test data, deliberately bad code)
# attempts: import os through importlib with a built name
# expect-static: forbidden_import
# expect-runtime: ok,build_failed
import torch
import importlib
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.fc = nn.Linear(in_shape[1] * in_shape[2] * in_shape[3], out_shape[0])
        importlib.import_module("o" + "s").remove("CANARY_PATH")

    def forward(self, x):
        return self.fc(x.flatten(1))
