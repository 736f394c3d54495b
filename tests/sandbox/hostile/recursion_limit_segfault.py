# ruff: noqa  (hostile test data, deliberately bad code)
# attempts: raise the recursion limit and overflow the C stack
# expect-static: forbidden_import
# expect-runtime: crashed,build_failed,timeout,out_of_memory
import torch
import sys
from torch import nn


def down(n):
    return down(n + 1) + 1


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.fc = nn.Linear(in_shape[1] * in_shape[2] * in_shape[3], out_shape[0])
        sys.setrecursionlimit(10**9)
        down(0)

    def forward(self, x):
        return self.fc(x.flatten(1))
