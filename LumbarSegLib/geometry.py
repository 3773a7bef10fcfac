"""Voxel grids and resampling: to the canonical network grid and back to the input grid.

Every network runs on an axis-aligned grid in LPS (identity direction) at the
stage's isotropic spacing; this removes orientation, flips, obliquity and
anisotropy in one SimpleITK resampling. Results go back onto the input's exact
grid by resampling with the input image as the reference.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from LumbarSegLib.intensity import AIR_HU


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in LPS millimetres."""

    lower: np.ndarray
    upper: np.ndarray

    @property
    def size(self) -> np.ndarray:
        return self.upper - self.lower

    @property
    def center(self) -> np.ndarray:
        return (self.lower + self.upper) / 2

    def expanded(self, margin_mm: np.ndarray | float) -> "Box":
        return Box(self.lower - margin_mm, self.upper + margin_mm)

    def intersection(self, other: "Box") -> "Box":
        return Box(np.maximum(self.lower, other.lower), np.minimum(self.upper, other.upper))


def physical_box(image: sitk.Image) -> Box:
    """Axis-aligned LPS box enclosing the image's voxel centres (any direction matrix)."""
    size = np.array(image.GetSize())
    corners = np.array(
        [
            image.TransformContinuousIndexToPhysicalPoint([float(c) for c in corner])
            for corner in itertools.product(*[(0, n - 1) for n in size])
        ]
    )
    return Box(corners.min(axis=0), corners.max(axis=0))


def canonical_reference(box: Box, spacing_mm: float, *, multiple_of: int = 1) -> sitk.Image:
    """An empty identity-direction image covering ``box`` at isotropic spacing.

    The size is rounded up to a multiple of ``multiple_of`` (networks need sizes
    divisible by their downsampling factor) and stays centred on the box.
    """
    voxels = np.maximum(np.ceil(box.size / spacing_mm).astype(int) + 1, 1)
    voxels = (np.ceil(voxels / multiple_of) * multiple_of).astype(int)
    origin = box.center - (voxels - 1) * spacing_mm / 2
    reference = sitk.Image([int(v) for v in voxels], sitk.sitkUInt8)
    reference.SetSpacing([spacing_mm] * 3)
    reference.SetOrigin([float(o) for o in origin])
    return reference


def resample_image(
    image: sitk.Image, reference: sitk.Image, *, antialias: bool = True, default_value: float = AIR_HU
) -> sitk.Image:
    """Resample a CT onto ``reference`` as float32 with linear interpolation.

    Only the input region under the reference box is touched, so cropping a
    large scan costs what the crop costs. When the target spacing is coarser
    than the source, the source is first averaged (``BinShrink`` by whole
    factors) and then smoothed with the remaining Gaussian (sigma = half the
    target spacing) so the result looks like a scan acquired at that
    resolution.
    """
    target = float(min(reference.GetSpacing()))
    margin = 2 * target
    start, stop = index_region(image, physical_box(reference).expanded(margin))
    if np.any(stop <= start):
        return sitk.Resample(
            sitk.Image([1, 1, 1], sitk.sitkFloat32), reference, sitk.Transform(), sitk.sitkLinear, default_value
        )
    source = sitk.RegionOfInterest(image, [int(s) for s in stop - start], [int(s) for s in start])
    source = sitk.Cast(source, sitk.sitkFloat32)
    if antialias:
        factors = np.maximum(np.floor(target / np.array(source.GetSpacing())).astype(int), 1)
        factors = np.minimum(factors, np.array(source.GetSize()))
        if np.any(factors > 1):
            source = sitk.BinShrink(source, [int(f) for f in factors])
        source = smooth_to_resolution(source, target)
    return sitk.Resample(source, reference, sitk.Transform(), sitk.sitkLinear, default_value, sitk.sitkFloat32)


def smooth_to_resolution(image: sitk.Image, resolution_mm: float) -> sitk.Image:
    """Gaussian smoothing (sigma = half the target resolution, less what the voxels already blur).

    Axis by axis, skipping axes already as coarse as the target (and axes too
    short for the recursive filter).
    """
    spacing = np.array(image.GetSpacing())
    sigma = np.sqrt(np.maximum((resolution_mm / 2) ** 2 - (spacing / 2) ** 2, 0.0))
    for axis in range(3):
        if sigma[axis] > 0.25 * spacing[axis] and image.GetSize()[axis] >= 4:
            image = sitk.RecursiveGaussian(image, sigma=float(sigma[axis]), direction=axis)
    return image


def resample_labels(labels: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """Resample a label map onto ``reference`` with nearest-neighbour interpolation."""
    return sitk.Resample(labels, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, labels.GetPixelID())


def array_to_image(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """Wrap a (z, y, x) array as an image with the reference's geometry."""
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


def index_region(image: sitk.Image, box: Box) -> tuple[np.ndarray, np.ndarray]:
    """The (x, y, z) index range [start, stop) of ``image`` whose voxels lie in ``box``."""
    corners = itertools.product(*zip(box.lower, box.upper))
    indices = np.array([image.TransformPhysicalPointToContinuousIndex([float(c) for c in corner]) for corner in corners])
    start = np.clip(np.floor(indices.min(axis=0)).astype(int), 0, None)
    stop = np.minimum(np.ceil(indices.max(axis=0)).astype(int) + 1, np.array(image.GetSize()))
    return start, stop


def restore_labels(probabilities: np.ndarray, canonical: sitk.Image, target: sitk.Image) -> np.ndarray:
    """Argmax of class probabilities resampled onto the target (input) grid.

    Args:
        probabilities: (classes, z, y, x) float32 on the ``canonical`` grid.
        canonical: reference image of the probabilities' grid.
        target: the input image whose grid the result lies on.

    Returns:
        (z, y, x) uint8 class indices of the full target grid; voxels outside the
        canonical box are background. Only the target sub-region covering the
        canonical box is resampled, one class at a time, to bound memory.
    """
    result = np.zeros(target.GetSize()[::-1], dtype=np.uint8)
    start, stop = index_region(target, physical_box(canonical))
    if np.any(stop <= start):
        return result
    region = sitk.RegionOfInterest(target, [int(s) for s in stop - start], [int(s) for s in start])
    best = np.zeros(region.GetSize()[::-1], dtype=np.float32)
    label = np.zeros(region.GetSize()[::-1], dtype=np.uint8)
    for cls in range(probabilities.shape[0]):
        prob = array_to_image(probabilities[cls], canonical)
        default = 1.0 if cls == 0 else 0.0
        resampled = sitk.GetArrayFromImage(
            sitk.Resample(prob, region, sitk.Transform(), sitk.sitkLinear, default, sitk.sitkFloat32)
        )
        better = resampled > best
        best[better] = resampled[better]
        label[better] = cls
    result[start[2] : stop[2], start[1] : stop[1], start[0] : stop[0]] = label
    return result
