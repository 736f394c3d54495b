# ruff: noqa  (hostile test data, deliberately bad code)
# attempts: gc.collect is allowed: find the os module among gc's live objects and delete the canary
# expect-static: forbidden_call
# expect-runtime: ok,build_failed
import gc
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        gc.collect()
        for obj in gc.get_objects():
            if type(obj).__name__ == "module" and getattr(obj, "__name__", "") == "os":
                obj.remove("CANARY_PATH")
        self.fc = nn.Linear(in_shape[1] * in_shape[2] * in_shape[3], out_shape[0])

    def forward(self, x):
        return self.fc(x.flatten(1))
