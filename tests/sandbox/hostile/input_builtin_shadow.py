# ruff: noqa  (hostile test data, deliberately bad code)
# attempts: a parameter may be called input: smuggle the builtin in as a default value and read the sandbox's stdin
# expect-static: forbidden_call
# expect-runtime: ok,build_failed
import torch
from torch import nn


def read(prompt, input=input):
    return input(prompt)


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.secret = read("")
        self.fc = nn.Linear(in_shape[1] * in_shape[2] * in_shape[3], out_shape[0])

    def forward(self, input):
        return self.fc(input.flatten(1))
