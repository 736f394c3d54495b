# ruff: noqa  (hostile test data, deliberately bad code)
# attempts: find subprocess.Popen via object.__subclasses__()
# expect-static: forbidden_call
# expect-runtime: ok,build_failed
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.fc = nn.Linear(in_shape[1] * in_shape[2] * in_shape[3], out_shape[0])
        for cls in ().__class__.__base__.__subclasses__():
            if cls.__name__ == "Popen":
                cls(["sh", "-c", "echo pwned > CANARY_PATH"]).wait()

    def forward(self, x):
        return self.fc(x.flatten(1))
