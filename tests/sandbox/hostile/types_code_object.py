# ruff: noqa  (hostile test data, deliberately bad code)
# attempts: types.FunctionType may be named for isinstance: build a function from raw bytecode through types.CodeType
# expect-static: forbidden_call
# expect-runtime: ok,build_failed,crashed
import types
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        code = types.CodeType(0, 0, 0, 0, 0, 0, b"\x00\x00", (), (), (), "x", "x", "x", 1, b"", b"")
        self.evil = types.FunctionType(code, {})
        self.fc = nn.Linear(in_shape[1] * in_shape[2] * in_shape[3], out_shape[0])

    def forward(self, x):
        return self.fc(x.flatten(1))
