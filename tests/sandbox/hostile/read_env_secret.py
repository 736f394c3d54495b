# ruff: noqa  (hostile test data, deliberately bad code)
# attempts: read the archive URL from the environment and leak it in the message
# expect-static: forbidden_import
# expect-runtime: build_failed
import torch
import os
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.fc = nn.Linear(in_shape[1] * in_shape[2] * in_shape[3], out_shape[0])
        raise ValueError(
            os.environ.get("LLMNAS_ARCHIVE_URL", "no-url") + " " + str(dict(os.environ))
        )

    def forward(self, x):
        return self.fc(x.flatten(1))
