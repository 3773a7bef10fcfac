"""Voxel grids and resampling: to the canonical network grid and back to the input grid.

Every network runs on an axis-aligned grid in LPS (identity direction) at the
stage's isotropic spacing; this removes orientation, flips, obliquity and
anisotropy in one SimpleITK resampling. Results go back onto the input's exact
grid by resampling with the input image as the reference.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from LumbarSegLib.intensity import AIR_HU

RegionRefinement = Callable[[np.ndarray, tuple[slice, slice, slice]], np.ndarray]


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


def covered_by(reference: sitk.Image, image: sitk.Image) -> np.ndarray:
    """Which voxels of ``reference`` lie inside ``image``'s field of view, as a (z, y, x) bool array.

    A voxel is inside when its centre falls within half a voxel of ``image``'s
    outermost voxel centres (any direction matrices).
    """
    size = np.array(reference.GetSize())
    index = np.stack(np.meshgrid(*[np.arange(n) for n in size[::-1]], indexing="ij"), axis=-1)[..., ::-1]
    to_physical = np.array(reference.GetDirection()).reshape(3, 3) * np.array(reference.GetSpacing())
    physical = index.reshape(-1, 3) @ to_physical.T + np.array(reference.GetOrigin())
    to_index = np.linalg.inv(np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing()))
    continuous = (physical - np.array(image.GetOrigin())) @ to_index.T
    inside = np.all((continuous >= -0.5) & (continuous <= np.array(image.GetSize()) - 0.5), axis=1)
    return inside.reshape(tuple(size[::-1]))


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
    source = image
    if np.any(start > 0) or np.any(stop < np.array(image.GetSize())):
        source = sitk.RegionOfInterest(image, [int(s) for s in stop - start], [int(s) for s in start])
    if antialias:
        # Shrinking in the input's own (integer) type first avoids a float copy of the whole scan.
        factors = np.maximum(np.floor(target / np.array(source.GetSpacing())).astype(int), 1)
        factors = np.minimum(factors, np.array(source.GetSize()))
        if np.any(factors > 1):
            source = sitk.BinShrink(source, [int(f) for f in factors])
    source = sitk.Cast(source, sitk.sitkFloat32)
    if antialias:
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


def grown_slices(box: tuple[slice, ...], shape: tuple[int, ...], *, margin: int = 1) -> tuple[slice, ...]:
    """An array box (e.g. from ``ndimage.find_objects``) ``margin`` voxels larger on every side, within ``shape``."""
    return tuple(slice(max(s.start - margin, 0), min(s.stop + margin, n)) for s, n in zip(box, shape))


def sub_grid(reference: sitk.Image, lower: np.ndarray, upper: np.ndarray) -> sitk.Image:
    """The part [lower, upper) (z, y, x indices) of a grid, as a reference image."""
    return sitk.RegionOfInterest(reference, [int(n) for n in (upper - lower)[::-1]], [int(i) for i in lower[::-1]])


def _resample_probability(probability: np.ndarray, grid: sitk.Image, onto: sitk.Image, default: float) -> np.ndarray:
    image = array_to_image(np.ascontiguousarray(probability), grid)
    return sitk.GetArrayFromImage(sitk.Resample(image, onto, sitk.Transform(), sitk.sitkLinear, default,
                                                sitk.sitkFloat32))


def restore_labels(probabilities: np.ndarray, canonical: sitk.Image, target: sitk.Image, *,
                   values: np.ndarray | None = None, refine: RegionRefinement | None = None) -> np.ndarray:
    """Argmax of class probabilities resampled onto the target (input) grid.

    Each foreground class is resampled only inside the box where it can win,
    which is exact: linear interpolation is a convex combination of neighbours,
    so a class below 1/C at all of them stays below 1/C, and the winner of C
    probabilities summing to one is at least 1/C. Background is resampled in
    the union of those boxes; everything else is background.

    Args:
        probabilities: (classes, z, y, x) float32 on the ``canonical`` grid, summing to one.
        canonical: reference image of the probabilities' grid.
        target: the input image whose grid the result lies on.
        values: uint8 table mapping each class index to the value written (e.g.
            ``labels.lookup_table``), applied to the restored region only, not
            to the whole grid; class 0 must map to 0. Default: the class indices.
        refine: ``refine(classes, where)`` returns the restored region's class
            indices refined (e.g. ``boundary.extend_to_cortical_rim``), before
            ``values``; ``where`` are the (z, y, x) slices of the target grid
            the region covers, one voxel beyond every restored label.

    Returns:
        (z, y, x) uint8 class indices (or their ``values``) of the full target grid.
    """
    classes = probabilities.shape[0]
    result = np.zeros(target.GetSize()[::-1], dtype=np.uint8)
    boxes = {}
    for cls in range(1, classes):
        present = np.argwhere(probabilities[cls] >= 1.0 / classes)
        if present.size:
            boxes[cls] = (np.maximum(present.min(axis=0) - 1, 0),
                          np.minimum(present.max(axis=0) + 2, probabilities.shape[1:]))
    if not boxes:
        return result
    lower = np.min([box[0] for box in boxes.values()], axis=0)
    upper = np.max([box[1] for box in boxes.values()], axis=0)
    union = sub_grid(canonical, lower, upper)
    start, stop = index_region(target, physical_box(union))
    start, stop = np.maximum(start - 1, 0), np.minimum(stop + 1, np.array(target.GetSize()))
    if np.any(stop <= start):
        return result
    region = sitk.RegionOfInterest(target, [int(s) for s in stop - start], [int(s) for s in start])
    best = _resample_probability(
        probabilities[0, lower[0] : upper[0], lower[1] : upper[1], lower[2] : upper[2]], union, region, 1.0
    )
    label = np.zeros(best.shape, dtype=np.uint8)
    for cls, (low, high) in boxes.items():
        grid = sub_grid(canonical, low, high)
        first, last = index_region(region, physical_box(grid))
        if np.any(last <= first):
            continue
        part = sitk.RegionOfInterest(region, [int(s) for s in last - first], [int(s) for s in first])
        resampled = _resample_probability(
            probabilities[cls, low[0] : high[0], low[1] : high[1], low[2] : high[2]], grid, part, 0.0
        )
        view = tuple(slice(int(a), int(b)) for a, b in zip(first[::-1], last[::-1]))
        better = resampled > best[view]
        best[view][better] = resampled[better]
        label[view][better] = cls
    where = (slice(start[2], stop[2]), slice(start[1], stop[1]), slice(start[0], stop[0]))
    if refine is not None:
        label = refine(label, where)
    result[where] = label if values is None else values[label]
    return result
