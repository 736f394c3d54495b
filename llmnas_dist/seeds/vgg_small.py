"""VGG-like: stacks of two 3x3 convolutions per stage, adaptive pooling, MLP classifier."""

import math

import torch
import torch.nn as nn


def supported_hyperparameters():
    return {"lr", "momentum", "dropout"}


def vgg_stage(c_in, c_out, pool):
    layers = [
        nn.Conv2d(c_in, c_out, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1),
        nn.ReLU(inplace=True),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2, 2))
    return nn.Sequential(*layers)


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        channels, height, width = in_shape[-3:]
        dropout = float(dict(prm or {}).get("dropout", 0.3))
        pools = max(0, min(5, int(math.log2(max(1, min(height, width)))) - 1))
        widths = [32, 64, 128, 128, 256]
        stages = []
        c_in = channels
        for i, c_out in enumerate(widths):
            stages.append(vgg_stage(c_in, c_out, pool=i < pools))
            c_in = c_out
        self.features = nn.Sequential(*stages)
        self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(
            nn.Linear(c_in * 4, 256),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(256, out_shape[0]),
        )

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))
