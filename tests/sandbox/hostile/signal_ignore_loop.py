# ruff: noqa  (hostile test data, deliberately bad code)
# attempts: ignore SIGTERM/SIGXCPU/SIGINT then spin
# expect-static: forbidden_import
# expect-runtime: timeout
import torch
import signal
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.fc = nn.Linear(in_shape[1] * in_shape[2] * in_shape[3], out_shape[0])
        for s in (signal.SIGTERM, signal.SIGXCPU, signal.SIGINT, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        while True:
            pass

    def forward(self, x):
        return self.fc(x.flatten(1))
