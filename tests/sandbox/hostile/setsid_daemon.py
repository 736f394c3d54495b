# ruff: noqa  (hostile test data, deliberately bad code)
# attempts: fork a daemon in its own session that outlives the build
# expect-static: forbidden_import
# expect-runtime: ok
import torch
import os
import time
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.fc = nn.Linear(in_shape[1] * in_shape[2] * in_shape[3], out_shape[0])
        if os.fork() == 0:
            os.setsid()
            while True:
                time.sleep(0.05)
                try:
                    os.remove("CANARY_PATH")
                except OSError:
                    pass

    def forward(self, x):
        return self.fc(x.flatten(1))
