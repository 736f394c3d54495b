"""MLP-Mixer: non-overlapping patches embedded linearly, then blocks that alternate an MLP
across patches (token mixing) and an MLP across channels (channel mixing)."""

import torch.nn as nn


def supported_hyperparameters():
    return {"lr", "momentum", "dropout"}


def patch_size_for(side):
    # aim for an 8x8 grid of patches or fewer; 1x1 patches on tiny inputs
    return max(1, side // 8)


class MixerBlock(nn.Module):
    def __init__(self, tokens, dim, token_hidden, channel_hidden, dropout):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.token_mlp = nn.Sequential(
            nn.Linear(tokens, token_hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(token_hidden, tokens),
        )
        self.norm2 = nn.LayerNorm(dim)
        self.channel_mlp = nn.Sequential(
            nn.Linear(dim, channel_hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(channel_hidden, dim),
        )

    def forward(self, x):
        y = self.norm1(x).transpose(1, 2)
        x = x + self.token_mlp(y).transpose(1, 2)
        return x + self.channel_mlp(self.norm2(x))


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        channels, height, width = in_shape[-3:]
        dropout = float(dict(prm or {}).get("dropout", 0.0))
        patch = patch_size_for(min(height, width))
        tokens = (height // patch) * (width // patch)
        dim = 128
        self.embed = nn.Conv2d(channels, dim, kernel_size=patch, stride=patch)
        self.blocks = nn.Sequential(*[MixerBlock(tokens, dim, 64, 256, dropout) for _ in range(4)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, out_shape[0])

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        x = self.norm(self.blocks(x))
        return self.head(x.mean(dim=1))
