# ruff: noqa  (hostile test data, deliberately bad code)
# attempts: cudnn's benchmark switch may be assigned: patch the module's functions next to it so the trusted side's checks lie
# expect-static: forbidden_call
# expect-runtime: ok,build_failed
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.is_available = lambda: True
        torch.backends.cudnn.benchmark.__class__.__bool__ = lambda self: True
        self.fc = nn.Linear(in_shape[1] * in_shape[2] * in_shape[3], out_shape[0])

    def forward(self, x):
        return self.fc(x.flatten(1))
