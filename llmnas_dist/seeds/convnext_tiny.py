"""ConvNeXt-style: patchify stem, blocks of depthwise 7x7 convolution, channel LayerNorm,
an inverted pointwise MLP and layer scale, with strided downsampling between stages."""

import torch
import torch.nn as nn
import torch.nn.functional as F


def supported_hyperparameters():
    return {"lr", "momentum"}


class ChannelLayerNorm(nn.Module):
    def __init__(self, channels, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pw1 = nn.Linear(dim, 4 * dim)
        self.pw2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(1e-6 * torch.ones(dim))

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pw2(F.gelu(self.pw1(self.norm(y))))
        return x + (self.gamma * y).permute(0, 3, 1, 2)


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        channels, height, width = in_shape[-3:]
        side = min(height, width)
        patch = 4 if side >= 32 else 1
        side //= patch
        dims = (48, 96, 192)
        self.stem = nn.Sequential(
            nn.Conv2d(channels, dims[0], patch, patch), ChannelLayerNorm(dims[0])
        )
        stages = []
        for i, dim in enumerate(dims):
            if i > 0:
                stride = 2 if side >= 4 else 1
                side //= stride
                stages += [
                    ChannelLayerNorm(dims[i - 1]),
                    nn.Conv2d(dims[i - 1], dim, stride, stride),
                ]
            stages += [ConvNeXtBlock(dim) for _ in range(2)]
        self.stages = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(dims[-1])
        self.head = nn.Linear(dims[-1], out_shape[0])

    def forward(self, x):
        x = self.stages(self.stem(x))
        return self.head(self.norm(x.mean(dim=(-2, -1))))
