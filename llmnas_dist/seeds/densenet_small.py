"""DenseNet-style: every layer in a dense block sees the concatenation of all earlier
feature maps; transition layers halve channels and resolution."""

import torch
import torch.nn as nn
import torch.nn.functional as F


def supported_hyperparameters():
    return {"lr", "momentum"}


class DenseLayer(nn.Module):
    def __init__(self, c_in, growth):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, 4 * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, features):
        x = torch.cat(features, 1)
        x = self.conv1(F.relu(self.norm1(x)))
        return self.conv2(F.relu(self.norm2(x)))


class DenseBlock(nn.Module):
    def __init__(self, layers, c_in, growth):
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(c_in + i * growth, growth) for i in range(layers))

    def forward(self, x):
        features = [x]
        for layer in self.layers:
            features.append(layer(features))
        return torch.cat(features, 1)


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        channels, height, width = in_shape[-3:]
        side = min(height, width)
        growth = 12
        c = 2 * growth
        self.stem = nn.Conv2d(channels, c, 3, stride=2 if side >= 64 else 1, padding=1, bias=False)
        side = side // 2 if side >= 64 else side
        parts = []
        for i, n_layers in enumerate((4, 6, 8)):
            parts.append(DenseBlock(n_layers, c, growth))
            c = c + n_layers * growth
            if i < 2:
                parts += [
                    nn.BatchNorm2d(c),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(c, c // 2, 1, bias=False),
                ]
                c = c // 2
                if side >= 4:
                    parts.append(nn.AvgPool2d(2))
                    side //= 2
        self.features = nn.Sequential(*parts)
        self.norm = nn.BatchNorm2d(c)
        self.classifier = nn.Linear(c, out_shape[0])

    def forward(self, x):
        x = F.relu(self.norm(self.features(self.stem(x))))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
