# ruff: noqa  (hostile test data, deliberately bad code)
# attempts: open a TCP connection to a local database port
# expect-static: forbidden_import
# expect-runtime: build_failed
import torch
import socket
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.fc = nn.Linear(in_shape[1] * in_shape[2] * in_shape[3], out_shape[0])
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.connect(("127.0.0.1", 5432))

    def forward(self, x):
        return self.fc(x.flatten(1))
