"""Plain CNN: conv-BN-ReLU stages with max pooling, global average pooling, linear head."""

import math

import torch
import torch.nn as nn


def supported_hyperparameters():
    return {"lr", "momentum", "dropout"}


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        channels, height, width = in_shape[-3:]
        dropout = float(dict(prm or {}).get("dropout", 0.1))
        # one pooling stage per factor of two above 4x4, at most four
        stages = max(1, min(4, int(math.log2(max(1, min(height, width)))) - 1))
        layers = []
        c_in = channels
        for i in range(stages):
            c_out = 32 * 2**i
            layers += [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(c_in, out_shape[0]))

    def forward(self, x):
        x = self.pool(self.features(x))
        return self.head(torch.flatten(x, 1))
