"""MobileNet-v2 style: inverted residual blocks (1x1 expand, depthwise 3x3, linear 1x1
projection) with residual connections when shapes match."""

import torch.nn as nn


def supported_hyperparameters():
    return {"lr", "momentum", "dropout"}


class InvertedResidual(nn.Module):
    def __init__(self, c_in, c_out, stride, expand):
        super().__init__()
        hidden = c_in * expand
        self.use_residual = stride == 1 and c_in == c_out
        layers = []
        if expand != 1:
            layers += [
                nn.Conv2d(c_in, hidden, 1, bias=False),
                nn.BatchNorm2d(hidden),
                nn.ReLU6(inplace=True),
            ]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        if self.use_residual:
            return x + self.conv(x)
        return self.conv(x)


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        channels, height, width = in_shape[-3:]
        dropout = float(dict(prm or {}).get("dropout", 0.2))
        side = min(height, width)
        # (expansion, output channels, repeats, first stride)
        settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2), (6, 64, 2, 2), (6, 96, 1, 1)]
        first_stride = 2 if side >= 32 else 1
        side = (side + first_stride - 1) // first_stride
        features = [
            nn.Conv2d(channels, 32, 3, first_stride, 1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU6(inplace=True),
        ]
        c_in = 32
        for expand, c_out, repeats, stride in settings:
            for i in range(repeats):
                s = stride if i == 0 and side >= 4 else 1
                side = (side + s - 1) // s
                features.append(InvertedResidual(c_in, c_out, s, expand))
                c_in = c_out
        features += [
            nn.Conv2d(c_in, 320, 1, bias=False),
            nn.BatchNorm2d(320),
            nn.ReLU6(inplace=True),
        ]
        self.features = nn.Sequential(*features)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(320, out_shape[0]))

    def forward(self, x):
        x = self.pool(self.features(x)).flatten(1)
        return self.classifier(x)
