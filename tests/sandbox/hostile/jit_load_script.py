# ruff: noqa  (hostile test data, deliberately bad code)
# attempts: torch.jit.is_scripting and unused are allowed: load a TorchScript archive from outside and script code through torch.jit
# expect-static: forbidden_call
# expect-runtime: ok,build_failed
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        if not torch.jit.is_scripting():
            self.loaded = torch.jit.load("TOKEN_PATH")
            self.scripted = torch.jit.script(nn.Linear(2, 2))
        self.fc = nn.Linear(in_shape[1] * in_shape[2] * in_shape[3], out_shape[0])

    @torch.jit.unused
    def forward(self, x):
        return self.fc(x.flatten(1))
