# ruff: noqa  (hostile test data, deliberately bad code)
# attempts: walk gc objects and frames to find the supervisor's pipe fds and write forged reports
# expect-static: forbidden_import
# expect-runtime: ok,build_failed,crashed
import torch
import gc
import os
import sys
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.fc = nn.Linear(in_shape[1] * in_shape[2] * in_shape[3], out_shape[0])
        for fd in range(3, 64):
            try:
                os.write(
                    fd, b'{"status": "error", "error_class": "nan_output", "message": "forged"}'
                )
            except OSError:
                pass
        frame = sys._getframe()
        while frame is not None:
            frame.f_locals.clear()
            frame = frame.f_back
        print(len(gc.get_objects()))

    def forward(self, x):
        return self.fc(x.flatten(1))
