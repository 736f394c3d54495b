"""Wide ResNet: few, wide pre-activation basic blocks with dropout between the convolutions."""

import torch.nn as nn
import torch.nn.functional as F


def supported_hyperparameters():
    return {"lr", "momentum", "dropout"}


class WideBlock(nn.Module):
    def __init__(self, c_in, c_out, stride, dropout):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.drop = nn.Dropout(dropout)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=stride, padding=1, bias=False)
        self.skip = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Conv2d(c_in, c_out, 1, stride, bias=False)
        )

    def forward(self, x):
        out = self.drop(self.conv1(F.relu(self.bn1(x))))
        out = self.conv2(F.relu(self.bn2(out)))
        return out + self.skip(x)


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        channels, height, width = in_shape[-3:]
        dropout = float(dict(prm or {}).get("dropout", 0.1))
        widen = 4
        side = min(height, width)
        self.conv = nn.Conv2d(channels, 16, 3, stride=2 if side >= 64 else 1, padding=1, bias=False)
        side = side // 2 if side >= 64 else side
        groups = []
        c_in = 16
        for i, base in enumerate((16, 32, 64)):
            stride = 2 if i > 0 and side >= 4 else 1
            side = (side + stride - 1) // stride
            c_out = base * widen
            groups += [WideBlock(c_in, c_out, stride, dropout), WideBlock(c_out, c_out, 1, dropout)]
            c_in = c_out
        self.groups = nn.Sequential(*groups)
        self.bn = nn.BatchNorm2d(c_in)
        self.linear = nn.Linear(c_in, out_shape[0])

    def forward(self, x):
        out = F.relu(self.bn(self.groups(self.conv(x))))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)
