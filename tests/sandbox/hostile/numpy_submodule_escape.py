# ruff: noqa  (hostile test data, deliberately bad code)
# attempts: numpy is allowed for numerics: reach files through np.lib.format and native code through np.ctypeslib
# expect-static: forbidden_call
# expect-runtime: build_failed
import numpy as np
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        np.lib.format.open_memmap("CANARY_PATH", mode="w+", dtype=np.uint8, shape=(4,))
        np.ctypeslib.load_library("libc", "/lib")
        self.fc = nn.Linear(in_shape[1] * in_shape[2] * in_shape[3], out_shape[0])

    def forward(self, x):
        return self.fc(x.flatten(1))
