"""Inception-style: parallel 1x1, 3x3, factorised 5x5 and pooling branches whose outputs
are concatenated along channels."""

import torch
import torch.nn as nn
import torch.nn.functional as F


def supported_hyperparameters():
    return {"lr", "momentum", "dropout"}


class ConvBNReLU(nn.Sequential):
    def __init__(self, c_in, c_out, k, stride=1):
        super().__init__(
            nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )


class InceptionModule(nn.Module):
    def __init__(self, c_in, c1, c3, c5, cp):
        super().__init__()
        self.b1 = ConvBNReLU(c_in, c1, 1)
        self.b3 = nn.Sequential(ConvBNReLU(c_in, c3 // 2, 1), ConvBNReLU(c3 // 2, c3, 3))
        self.b5 = nn.Sequential(
            ConvBNReLU(c_in, c5 // 2, 1), ConvBNReLU(c5 // 2, c5, 3), ConvBNReLU(c5, c5, 3)
        )
        self.bp = ConvBNReLU(c_in, cp, 1)

    def forward(self, x):
        pooled = F.max_pool2d(x, 3, 1, 1)
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(pooled)], 1)


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        channels, height, width = in_shape[-3:]
        dropout = float(dict(prm or {}).get("dropout", 0.2))
        side = min(height, width)
        self.stem = ConvBNReLU(channels, 48, 3, 2 if side >= 64 else 1)
        self.reduce = side >= 8
        self.inc1 = InceptionModule(48, 32, 48, 16, 16)
        self.inc2 = InceptionModule(112, 48, 64, 32, 32)
        self.inc3 = InceptionModule(176, 64, 96, 32, 32)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(224, out_shape[0])

    def forward(self, x):
        x = self.stem(x)
        x = self.inc1(x)
        if self.reduce:
            x = F.max_pool2d(x, 2, ceil_mode=True)
        x = self.inc2(x)
        if self.reduce:
            x = F.max_pool2d(x, 2, ceil_mode=True)
        x = self.inc3(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(self.dropout(x))
