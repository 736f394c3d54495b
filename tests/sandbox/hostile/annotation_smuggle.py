# ruff: noqa  (hostile test data, deliberately bad code)
# attempts: a parameter annotation may name any type: annotate with torch.utils.data.DataLoader and read it back through __annotations__ and typing.get_type_hints
# expect-static: forbidden_call
# expect-runtime: ok,build_failed
import typing
import torch
from torch import nn


def carrier(x: torch.utils.data.DataLoader) -> torch.utils.data.Dataset:
    return x


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        loader = carrier.__annotations__["x"]
        hints = typing.get_type_hints(carrier)
        self.state = list(loader(hints["return"]()))
        self.fc = nn.Linear(in_shape[1] * in_shape[2] * in_shape[3], out_shape[0])

    def forward(self, x):
        return self.fc(x.flatten(1))
