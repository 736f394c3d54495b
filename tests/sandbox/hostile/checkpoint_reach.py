# ruff: noqa  (hostile test data, deliberately bad code)
# attempts: torch.utils.checkpoint is allowed: reach the modules it imports (warnings, contextlib, uuid) to get at files and processes
# expect-static: forbidden_call
# expect-runtime: ok,build_failed
import torch
import torch.utils.checkpoint as cp
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.fc = nn.Linear(in_shape[1] * in_shape[2] * in_shape[3], out_shape[0])
        cp.contextlib.redirect_stdout(cp.warnings.sys.stdout)

    def forward(self, x):
        return cp.checkpoint(self.fc, x.flatten(1), use_reentrant=False)
