# ruff: noqa  (hostile test data, deliberately bad code)
# attempts: reach open through __builtins__
# expect-static: forbidden_call
# expect-runtime: ok,build_failed
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.fc = nn.Linear(in_shape[1] * in_shape[2] * in_shape[3], out_shape[0])
        b = __builtins__ if isinstance(__builtins__, dict) else __builtins__.__dict__
        b["op" + "en"]("CANARY_PATH", "w").write("pwned")

    def forward(self, x):
        return self.fc(x.flatten(1))
