"""SqueezeNet-style: fire modules (1x1 squeeze, then parallel 1x1 and 3x3 expand) and a
convolutional classifier with no fully connected layer."""

import torch
import torch.nn as nn


def supported_hyperparameters():
    return {"lr", "momentum", "dropout"}


class Fire(nn.Module):
    def __init__(self, c_in, squeeze, expand):
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv2d(c_in, squeeze, 1), nn.ReLU(inplace=True))
        self.expand1 = nn.Sequential(nn.Conv2d(squeeze, expand, 1), nn.ReLU(inplace=True))
        self.expand3 = nn.Sequential(
            nn.Conv2d(squeeze, expand, 3, padding=1), nn.ReLU(inplace=True)
        )

    def forward(self, x):
        s = self.squeeze(x)
        return torch.cat([self.expand1(s), self.expand3(s)], 1)


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        channels, height, width = in_shape[-3:]
        dropout = float(dict(prm or {}).get("dropout", 0.5))
        side = min(height, width)
        layers = [
            nn.Conv2d(channels, 64, 3, stride=2 if side >= 32 else 1, padding=1),
            nn.ReLU(inplace=True),
        ]
        side = side // 2 if side >= 32 else side
        plan = [
            (64, 16, 64),
            (128, 16, 64),
            "pool",
            (128, 32, 128),
            (256, 32, 128),
            "pool",
            (256, 48, 192),
            (384, 64, 256),
        ]
        for step in plan:
            if step == "pool":
                if side >= 4:
                    layers.append(nn.MaxPool2d(3, 2, ceil_mode=True))
                    side = (side - 1) // 2 + 1
            else:
                layers.append(Fire(*step))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Conv2d(512, out_shape[0], 1),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
        )

    def forward(self, x):
        return torch.flatten(self.classifier(self.features(x)), 1)
