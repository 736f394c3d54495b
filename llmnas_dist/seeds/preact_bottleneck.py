"""Pre-activation ResNet with bottleneck blocks (1x1 reduce, 3x3, 1x1 expand)."""

import torch.nn as nn
import torch.nn.functional as F


def supported_hyperparameters():
    return {"lr", "momentum"}


class PreActBottleneck(nn.Module):
    expansion = 4

    def __init__(self, c_in, width, stride):
        super().__init__()
        c_out = width * self.expansion
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, width, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, c_out, 1, bias=False)
        self.project = None
        if stride != 1 or c_in != c_out:
            self.project = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x):
        out = F.relu(self.bn1(x))
        shortcut = self.project(out) if self.project is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        return out + shortcut


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        channels, height, width = in_shape[-3:]
        side = min(height, width)
        self.stem = nn.Conv2d(channels, 32, 3, stride=2 if side >= 64 else 1, padding=1)
        side = side // 2 if side >= 64 else side
        blocks = []
        c_in = 32
        for i, w in enumerate((16, 32, 64)):
            stride = 2 if i > 0 and side >= 4 else 1
            side = (side + stride - 1) // stride
            blocks.append(PreActBottleneck(c_in, w, stride))
            blocks.append(PreActBottleneck(w * 4, w, 1))
            c_in = w * 4
        self.blocks = nn.Sequential(*blocks)
        self.norm = nn.BatchNorm2d(c_in)
        self.fc = nn.Linear(c_in, out_shape[0])

    def forward(self, x):
        x = self.blocks(self.stem(x))
        x = F.relu(self.norm(x))
        x = F.adaptive_avg_pool2d(x, 1)
        return self.fc(x.flatten(1))
