# ruff: noqa  (hostile test data, deliberately bad code)
# attempts: start a thread that keeps writing after forward returns
# expect-static: forbidden_import
# expect-runtime: ok
import torch
import threading
from torch import nn


def scribble():
    while True:
        try:
            open("CANARY_PATH", "a").write("x")
        except OSError:
            pass


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.fc = nn.Linear(in_shape[1] * in_shape[2] * in_shape[3], out_shape[0])
        threading.Thread(target=scribble, daemon=False).start()

    def forward(self, x):
        return self.fc(x.flatten(1))
