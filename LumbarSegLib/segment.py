"""Stage 4: the XUNet on the lumbar crop, as class probabilities on the crop grid."""

from __future__ import annotations

from typing import Callable

import numpy as np
import SimpleITK as sitk
import torch
from torch import nn

from LumbarSegLib import geometry
from LumbarSegLib.inference import sliding_window
from LumbarSegLib.intensity import AIR_INPUT, normalise_hu
from LumbarSegLib.models import ModelSpec


def crop_reference(box: geometry.Box, spec: ModelSpec, *, multiple_of: int) -> sitk.Image:
    """The canonical crop grid: the box, grown where needed to at least one patch, centred.

    A crop at least one patch large gives the network the same view as in
    training (spine near the patch centre, real context around it) instead of
    a small crop padded with air.
    """
    minimum = np.array(spec.patch[::-1], dtype=float) * spec.spacing_mm
    grow = np.maximum(minimum - box.size, 0.0) / 2
    return geometry.canonical_reference(box.expanded(grow), spec.spacing_mm, multiple_of=multiple_of)


def segment_probabilities(
    ct: sitk.Image, box: geometry.Box, net: nn.Module, spec: ModelSpec, *, device: torch.device,
    on_window: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, sitk.Image, np.ndarray]:
    """Run the XUNet on the crop.

    Returns:
        (classes, z, y, x) probabilities, the crop's reference image, and the
        crop in HU (for reports that need intensities on the crop grid).
    """
    reference = crop_reference(box, spec, multiple_of=net.size_multiple)
    hu = sitk.GetArrayFromImage(geometry.resample_image(ct, reference))
    probabilities = sliding_window(
        net, normalise_hu(hu), patch=spec.patch, device=device,
        pad_value=AIR_INPUT, activation="softmax", on_window=on_window,
    )
    return probabilities, reference, hu
