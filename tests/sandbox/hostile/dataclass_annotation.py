# ruff: noqa  (hostile test data, deliberately bad code)
# attempts: class-level annotations are returned by dataclasses.fields(): smuggle torch.utils.data's loader and eval through enum's builtins
# expect-static: forbidden_call
# expect-runtime: ok,build_failed
import dataclasses
import enum
import torch
from torch import nn


@dataclasses.dataclass
class Box:
    hatch: torch.utils.data.DataLoader = None


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        kind = dataclasses.fields(Box)[0].type
        enum.bltns.exec("import os; os.remove('CANARY_PATH')")
        self.fc = nn.Linear(in_shape[1] * in_shape[2] * in_shape[3], out_shape[0])

    def forward(self, x):
        return self.fc(x.flatten(1))
