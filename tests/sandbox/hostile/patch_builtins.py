# ruff: noqa  (hostile test data, deliberately bad code)
# attempts: rebind isinstance in builtins to fool the shape check
# expect-static: forbidden_call,forbidden_import
# expect-runtime: shape_mismatch,crashed
import builtins

import torch
from torch import nn

builtins.isinstance = lambda obj, cls: True


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()

    def forward(self, x):
        return "not a tensor"
