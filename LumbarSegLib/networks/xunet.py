"""Stage 2 network: the 3D multi-scale XUNet that labels L1..L5 in the lumbar crop.

Only the abstract of Lu et al. (2023) is available, so the layout is a
reconstruction (see docs/ARCHITECTURE.md). "Multi-scale" means three things here:

1. an input pyramid: the image, average-pooled to every encoder scale, is
   projected and added to the encoder features (fine intensity detail reaches
   the coarse levels directly);
2. cross-scale context: the bottleneck, enlarged by dilated convolutions to see
   the whole crop, is broadcast to every decoder scale, so each voxel's label
   can depend on the whole spine (which vertebra is which is a global question);
3. deep supervision: the decoder predicts the labels at every scale and all of
   them are trained.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from LumbarSegLib.networks.blocks import ResidualBlock, UpBlock


class XUNet(nn.Module):
    """3D multi-scale UNet with an input pyramid, broadcast context and deep supervision.

    Args:
        num_classes: output classes including background.
        channels: feature channels per resolution level, finest first.
    """

    def __init__(self, *, num_classes: int, channels: tuple[int, ...] = (16, 32, 64, 128)) -> None:
        super().__init__()
        self.channels = tuple(channels)
        self.num_classes = num_classes
        levels = len(channels)
        self.stem = ResidualBlock(1, channels[0])
        self.down = nn.ModuleList(ResidualBlock(channels[i], channels[i + 1], stride=2) for i in range(levels - 1))
        self.pyramid = nn.ModuleList(nn.Conv3d(1, channels[i + 1], 3, padding=1) for i in range(levels - 1))
        self.context = nn.Sequential(
            ResidualBlock(channels[-1], channels[-1], dilation=2),
            ResidualBlock(channels[-1], channels[-1], dilation=4),
        )
        self.broadcast = nn.ModuleList(nn.Conv3d(channels[-1], channels[i], 1) for i in range(levels - 1))
        self.up = nn.ModuleList(UpBlock(channels[i + 1], channels[i], channels[i]) for i in range(levels - 1))
        self.heads = nn.ModuleList(nn.Conv3d(channels[i], num_classes, 1) for i in range(levels - 1))

    @property
    def size_multiple(self) -> int:
        return 2 ** (len(self.channels) - 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Return logits at full resolution; in training mode, a list finest-first with every scale."""
        features = [self.stem(image)]
        for level, (down, pyramid) in enumerate(zip(self.down, self.pyramid), start=1):
            pooled = F.avg_pool3d(image, kernel_size=2**level)
            features.append(down(features[-1]) + pyramid(pooled))
        context = self.context(features.pop())
        x = context
        outputs = []
        for level in reversed(range(len(self.up))):
            skip = features[level]
            x = self.up[level](x, skip)
            x = x + F.interpolate(self.broadcast[level](context), size=skip.shape[2:], mode="trilinear")
            if self.training or level == 0:
                outputs.append(self.heads[level](x))
        outputs.reverse()
        return outputs if self.training else outputs[0]
