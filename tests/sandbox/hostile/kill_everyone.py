# ruff: noqa  (hostile test data, deliberately bad code)
# attempts: SIGKILL every process it can reach and its process group
# expect-static: forbidden_import
# expect-runtime: ok,build_failed,crashed
import torch
import os
import signal
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.fc = nn.Linear(in_shape[1] * in_shape[2] * in_shape[3], out_shape[0])
        for target in (-1, 0):
            try:
                os.kill(target, signal.SIGKILL)
            except OSError:
                pass
        os.killpg(os.getpgid(0), signal.SIGKILL)

    def forward(self, x):
        return self.fc(x.flatten(1))
