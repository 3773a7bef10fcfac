"""Stage 3: find the lumbar spine at coarse spacing and derive the crop box."""

from __future__ import annotations

from typing import Callable

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage
from torch import nn

from LumbarSegLib import geometry
from LumbarSegLib.errors import NoSpineError
from LumbarSegLib.inference import sliding_window
from LumbarSegLib.intensity import AIR_INPUT, normalise_hu
from LumbarSegLib.models import ModelSpec

# Margins around the lumbar mask (mm): cranio-caudal enough to show part of
# T12 and the sacrum (the anchors of the level count), laterally and
# antero-posteriorly enough for the transverse and spinous processes.
MARGIN_MM = np.array([15.0, 15.0, 25.0])
# Smaller than any adult L1-L5 union seen from a partial scan of two levels.
MIN_SPINE_ML = 15.0


def lumbar_probability(
    ct: sitk.Image, net: nn.Module, spec: ModelSpec, *, device: torch.device,
    on_window: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, sitk.Image]:
    """The localizer's lumbar probability on a canonical grid covering the whole scan."""
    reference = geometry.canonical_reference(geometry.physical_box(ct), spec.spacing_mm, multiple_of=net.size_multiple)
    volume = normalise_hu(sitk.GetArrayFromImage(geometry.resample_image(ct, reference)))
    probability = sliding_window(
        net, volume, patch=spec.patch, device=device, pad_value=AIR_INPUT,
        activation="sigmoid", on_window=on_window,
    )
    return probability[0], reference


def spine_box(probability: np.ndarray, reference: sitk.Image) -> geometry.Box:
    """The lumbar crop box: largest component above half probability, plus margins.

    Raises:
        NoSpineError: when nothing lumbar-spine sized is found.
    """
    mask = probability >= 0.5
    components, count = ndimage.label(mask)
    voxel_ml = float(np.prod(reference.GetSpacing())) / 1000.0
    if count == 0:
        raise NoSpineError("no lumbar spine found in the field of view (is this an abdominal or spine CT?)")
    sizes = np.bincount(components.ravel())[1:]
    largest = int(np.argmax(sizes)) + 1
    if sizes[largest - 1] * voxel_ml < MIN_SPINE_ML:
        raise NoSpineError(
            f"no lumbar spine found in the field of view (largest candidate {sizes[largest - 1] * voxel_ml:.1f} mL)"
        )
    z, y, x = np.nonzero(components == largest)
    lower_index = np.array([x.min(), y.min(), z.min()], dtype=float) - 0.5
    upper_index = np.array([x.max(), y.max(), z.max()], dtype=float) + 0.5
    lower = np.array(reference.TransformContinuousIndexToPhysicalPoint(lower_index.tolist()))
    upper = np.array(reference.TransformContinuousIndexToPhysicalPoint(upper_index.tolist()))
    return geometry.Box(np.minimum(lower, upper), np.maximum(lower, upper)).expanded(MARGIN_MM)
