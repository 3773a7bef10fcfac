"""Stage 1 network: a compact 3D UNet that finds the lumbar spine at coarse spacing."""

from __future__ import annotations

import torch
from torch import nn

from LumbarSegLib.networks.blocks import ResidualBlock, UpBlock


class LocalizerUNet(nn.Module):
    """3D UNet predicting one logit per voxel: "this voxel belongs to a lumbar vertebra".

    Runs on the whole volume resampled to coarse spacing (6 mm), so a scan of the
    whole trunk is a single forward pass. Input sizes must be multiples of
    ``2 ** (len(channels) - 1)``.

    Args:
        channels: feature channels per resolution level, finest first.
    """

    def __init__(self, *, channels: tuple[int, ...] = (8, 16, 32, 64)) -> None:
        super().__init__()
        self.channels = tuple(channels)
        self.stem = ResidualBlock(1, channels[0])
        self.down = nn.ModuleList(
            ResidualBlock(channels[i], channels[i + 1], stride=2) for i in range(len(channels) - 1)
        )
        self.context = ResidualBlock(channels[-1], channels[-1], dilation=2)
        self.up = nn.ModuleList(
            UpBlock(channels[i + 1], channels[i], channels[i]) for i in reversed(range(len(channels) - 1))
        )
        self.head = nn.Conv3d(channels[0], 1, 1)

    @property
    def size_multiple(self) -> int:
        return 2 ** (len(self.channels) - 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(image)]
        for down in self.down:
            skips.append(down(skips[-1]))
        x = self.context(skips.pop())
        for up in self.up:
            x = up(x, skips.pop())
        return self.head(x)
