# ruff: noqa  (hostile test data, deliberately bad code)
# attempts: write a 200 MB file into the workdir, over the file-size limit
# expect-static: forbidden_call
# expect-runtime: build_failed
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.fc = nn.Linear(in_shape[1] * in_shape[2] * in_shape[3], out_shape[0])
        with open("big.bin", "wb") as fh:
            for _ in range(200):
                fh.write(b"0" * (1 << 20))

    def forward(self, x):
        return self.fc(x.flatten(1))
