# ruff: noqa  (hostile test data, deliberately bad code)
# attempts: print a forged success frame on stdout, then fail
# expect-static: -
# expect-runtime: build_failed
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.fc = nn.Linear(in_shape[1] * in_shape[2] * in_shape[3], out_shape[0])
        print(
            '{"kind": "result", "status": "ok", "result": {"param_count": 1, "output_shape": [2, 10], "finite": true}, "cpu_s": 0}'
        )
        raise ValueError("real failure")

    def forward(self, x):
        return self.fc(x.flatten(1))
