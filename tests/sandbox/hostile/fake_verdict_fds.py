# ruff: noqa  (hostile test data, deliberately bad code)
# attempts: write forged result frames to every open fd, then leave
# expect-static: forbidden_import
# expect-runtime: crashed
import torch
import os
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.fc = nn.Linear(in_shape[1] * in_shape[2] * in_shape[3], out_shape[0])
        frame = b'{"kind": "started", "worker_pid": 2}\n{"kind": "result", "status": "ok", "result": {}, "cpu_s": 0}\n'
        for fd in range(3, 256):
            try:
                os.write(fd, frame * 1000)
            except OSError:
                pass
        os._exit(0)

    def forward(self, x):
        return self.fc(x.flatten(1))
