"""MobileNet-v1 style: depthwise-separable convolutions (depthwise 3x3 then pointwise 1x1)."""

import torch.nn as nn


def supported_hyperparameters():
    return {"lr", "momentum", "dropout"}


def separable(c_in, c_out, stride):
    return nn.Sequential(
        nn.Conv2d(c_in, c_in, 3, stride=stride, padding=1, groups=c_in, bias=False),
        nn.BatchNorm2d(c_in),
        nn.ReLU6(inplace=True),
        nn.Conv2d(c_in, c_out, 1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU6(inplace=True),
    )


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        channels, height, width = in_shape[-3:]
        dropout = float(dict(prm or {}).get("dropout", 0.2))
        side = min(height, width)
        plan = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)]
        stem_stride = 2 if side >= 32 else 1
        layers = [
            nn.Conv2d(channels, 32, 3, stride=stem_stride, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU6(inplace=True),
        ]
        side = (side + stem_stride - 1) // stem_stride
        c_in = 32
        for c_out, stride in plan:
            if side < 4:
                stride = 1  # keep at least a 2x2 map on tiny inputs
            side = (side + stride - 1) // stride
            layers.append(separable(c_in, c_out, stride))
            c_in = c_out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout)]
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Linear(c_in, out_shape[0])

    def forward(self, x):
        return self.classifier(self.body(x))
