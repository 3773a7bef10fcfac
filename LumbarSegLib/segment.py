"""Stage 4: the XUNet on the lumbar crop, as class probabilities on the crop grid."""

from __future__ import annotations

from typing import Callable

import numpy as np
import SimpleITK as sitk
import torch
from torch import nn

from LumbarSegLib import geometry
from LumbarSegLib.inference import padded_shape, sliding_window
from LumbarSegLib.intensity import AIR_INPUT, normalise_hu
from LumbarSegLib.labels import LUMBAR_CLASSES, NETWORK_CLASSES
from LumbarSegLib.models import ModelSpec

# When a lumbar label reaches the crop's top or bottom slices, the localizer's box cut
# the spine: the crop grows by this much on that side (within the scan) and the XUNet
# runs again, so that it sees the thoracic and sacral anchors of the level count.
GROWTH_MM = 60.0
EDGE_SLICES = 2
# Above L1 the crop must show the whole of T12 and its rib heads (the thoracic anchor and
# the rib check of ``transitional``); the localizer's box often stops short of it.
L1_HEADROOM_MM = 40.0
MAX_GROWTHS = 2
# The XUNet is fully convolutional and runs as one window over the whole crop: a
# quarter of the work of the overlapping training-size windows that would cover
# the same crop, and measured at least as accurate (docs/MODEL_CARD.md). Larger
# crops (a wrong box) fall back to sliding windows of this size (z, y, x voxels;
# ~0.4 GB of activations).
MAX_WINDOW = (192, 96, 96)
L1_CLASS = NETWORK_CLASSES.index("L1")


def crop_reference(box: geometry.Box, spec: ModelSpec, *, multiple_of: int) -> sitk.Image:
    """The canonical crop grid: the box, grown where needed to at least one patch, centred.

    A crop at least one patch large gives the network the same view as in
    training (spine near the patch centre, real context around it) instead of
    a small crop padded with air.
    """
    minimum = np.array(spec.patch[::-1], dtype=float) * spec.spacing_mm
    grow = np.maximum(minimum - box.size, 0.0) / 2
    return geometry.canonical_reference(box.expanded(grow), spec.spacing_mm, multiple_of=multiple_of)


def inference_window(crop_shape: tuple[int, int, int], spec: ModelSpec, *, multiple_of: int
                     ) -> tuple[int, int, int]:
    """The XUNet's window on a crop: the whole (padded) crop, at most ``MAX_WINDOW`` per axis."""
    whole = padded_shape(crop_shape, spec.patch, multiple_of)
    return tuple(min(n, limit) for n, limit in zip(whole, MAX_WINDOW))


def cut_ends(probabilities: np.ndarray, *, spacing_mm: float) -> tuple[bool, bool]:
    """Whether the crop cuts the spine at its (bottom, top) (grid axis 0 runs inferior to superior).

    It does where a lumbar label reaches the crop's end slices, and at the top
    also where L1 comes within ``L1_HEADROOM_MM`` of it.
    """
    labels = probabilities.argmax(axis=0)
    lumbar = np.isin(labels, LUMBAR_CLASSES)
    headroom = int(np.ceil(L1_HEADROOM_MM / spacing_mm))
    top_cut = lumbar[-EDGE_SLICES:].any() or (labels[-headroom:] == L1_CLASS).any()
    return bool(lumbar[:EDGE_SLICES].any()), bool(top_cut)


def grown_box(box: geometry.Box, probabilities: np.ndarray, crop: sitk.Image, scan: geometry.Box
              ) -> geometry.Box | None:
    """The box grown in z past each crop end that cuts the spine (``cut_ends``), within the scan; None if nothing to grow."""
    bottom_cut, top_cut = cut_ends(probabilities, spacing_mm=crop.GetSpacing()[2])
    covered = geometry.physical_box(crop)
    down = GROWTH_MM if bottom_cut and covered.lower[2] > scan.lower[2] else 0.0
    up = GROWTH_MM if top_cut and covered.upper[2] < scan.upper[2] else 0.0
    if not (down or up):
        return None
    return geometry.Box(box.lower - np.array([0.0, 0.0, down]), box.upper + np.array([0.0, 0.0, up]))


def segment_spine(
    ct: sitk.Image, box: geometry.Box, net: nn.Module, spec: ModelSpec, *, device: torch.device,
    on_window: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, sitk.Image, np.ndarray]:
    """``segment_probabilities`` on the box, grown (at most ``MAX_GROWTHS`` times) where it cuts the spine."""
    result = segment_probabilities(ct, box, net, spec, device=device, on_window=on_window)
    scan = geometry.physical_box(ct)
    for _ in range(MAX_GROWTHS):
        box = grown_box(box, result[0], result[1], scan)
        if box is None:
            break
        result = segment_probabilities(ct, box, net, spec, device=device)
    return result


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
    window = inference_window(hu.shape, spec, multiple_of=net.size_multiple)
    probabilities = sliding_window(
        net, normalise_hu(hu), patch=window, device=device,
        pad_value=AIR_INPUT, activation="softmax", on_window=on_window,
    )
    return probabilities, reference, hu
