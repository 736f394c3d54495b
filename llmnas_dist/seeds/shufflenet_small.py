"""ShuffleNet-v2 style: channel split, a depthwise-separable branch, concatenation and a
channel shuffle so information crosses the two halves."""

import torch
import torch.nn as nn


def supported_hyperparameters():
    return {"lr", "momentum"}


def channel_shuffle(x, groups):
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ShuffleUnit(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.stride = stride
        branch = c_out // 2
        right_in = c_in if stride > 1 else branch
        self.right = nn.Sequential(
            nn.Conv2d(right_in, branch, 1, bias=False),
            nn.BatchNorm2d(branch),
            nn.ReLU(inplace=True),
            nn.Conv2d(branch, branch, 3, stride, 1, groups=branch, bias=False),
            nn.BatchNorm2d(branch),
            nn.Conv2d(branch, branch, 1, bias=False),
            nn.BatchNorm2d(branch),
            nn.ReLU(inplace=True),
        )
        self.left = None
        if stride > 1:
            self.left = nn.Sequential(
                nn.Conv2d(c_in, c_in, 3, stride, 1, groups=c_in, bias=False),
                nn.BatchNorm2d(c_in),
                nn.Conv2d(c_in, branch, 1, bias=False),
                nn.BatchNorm2d(branch),
                nn.ReLU(inplace=True),
            )

    def forward(self, x):
        if self.left is None:
            keep, work = x.chunk(2, dim=1)
            out = torch.cat([keep, self.right(work)], 1)
        else:
            out = torch.cat([self.left(x), self.right(x)], 1)
        return channel_shuffle(out, 2)


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        channels, height, width = in_shape[-3:]
        side = min(height, width)
        stem_stride = 2 if side >= 32 else 1
        self.stem = nn.Sequential(
            nn.Conv2d(channels, 24, 3, stem_stride, 1, bias=False),
            nn.BatchNorm2d(24),
            nn.ReLU(inplace=True),
        )
        side = (side + stem_stride - 1) // stem_stride
        units = []
        c_in = 24
        for c_out, repeats in ((48, 2), (96, 3), (192, 2)):
            stride = 2 if side >= 4 else 1
            side = (side + stride - 1) // stride
            units.append(ShuffleUnit(c_in, c_out, stride))
            if stride == 1:
                units[-1] = nn.Sequential(
                    nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out)
                )
            units += [ShuffleUnit(c_out, c_out, 1) for _ in range(repeats - 1)]
            c_in = c_out
        self.units = nn.Sequential(*units)
        self.conv_last = nn.Sequential(
            nn.Conv2d(c_in, 512, 1, bias=False), nn.BatchNorm2d(512), nn.ReLU(inplace=True)
        )
        self.fc = nn.Linear(512, out_shape[0])

    def forward(self, x):
        x = self.conv_last(self.units(self.stem(x)))
        return self.fc(x.mean(dim=(2, 3)))
