"""Training losses with an ignore mask for voxels whose label is unknown."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def masked_dice_ce(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Cross-entropy plus soft Dice over the foreground classes, on valid voxels only.

    Args:
        logits: (batch, classes, z, y, x).
        target: (batch, z, y, x) int64 class indices.
        valid: (batch, z, y, x) bool; False voxels contribute nothing.
    """
    weight = valid.float()
    ce = (F.cross_entropy(logits, target, reduction="none") * weight).sum() / weight.sum().clamp_min(1.0)
    probs = torch.softmax(logits, dim=1)[:, 1:]
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 4, 1, 2, 3)[:, 1:].float()
    mask = weight[:, None]
    dims = (0, 2, 3, 4)
    intersection = (probs * onehot * mask).sum(dims)
    denominator = ((probs + onehot) * mask).sum(dims)
    present = onehot.mul(mask).sum(dims) > 0
    dice = (2 * intersection + 1e-5) / (denominator + 1e-5)
    dice_loss = (1 - dice[present]).mean() if present.any() else probs.sum() * 0
    return ce + dice_loss


def masked_bce_dice(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy plus soft Dice for one-channel logits, on valid voxels only."""
    logits = logits[:, 0]
    target = target.float()
    weight = valid.float()
    bce = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * weight).sum()
    bce = bce / weight.sum().clamp_min(1.0)
    probs = torch.sigmoid(logits) * weight
    dice = (2 * (probs * target).sum() + 1e-5) / (probs.sum() + (target * weight).sum() + 1e-5)
    return bce + (1 - dice)


def deep_supervision_loss(outputs: list[torch.Tensor], target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Sum of the multi-class loss at every decoder scale, weights halving per scale.

    Coarser targets are taken by strided subsampling, which keeps them integer classes.
    """
    total = outputs[0].new_zeros(())
    norm = 0.0
    for level, logits in enumerate(outputs):
        step = 2**level
        weight = 0.5**level
        total = total + weight * masked_dice_ce(
            logits, target[:, ::step, ::step, ::step], valid[:, ::step, ::step, ::step]
        )
        norm += weight
    return total / norm
