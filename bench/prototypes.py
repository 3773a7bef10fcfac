"""Prototypes of proposed changes to the pipeline's hot spots, and a switch that applies them.

Measured against the current functions by ``bench/hotspots.py``; applied to a
whole run by ``python bench/run_benchmark.py --prototypes`` (in the child
process only: the library's files are not changed). Each prototype keeps the
current function's signature so it can stand in for it.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk
import torch

from LumbarSegLib import geometry, io, localize, segment, seg_nrrd
from LumbarSegLib.inference import _windows, gaussian_weights, padded_shape, predict_logits
from LumbarSegLib.intensity import AIR_HU, normalise_hu
from LumbarSegLib.models import ModelSpec

PAD = float(normalise_hu(np.array([AIR_HU]))[0])


def resample_shrink_first(image: sitk.Image, reference: sitk.Image, *, antialias: bool = True,
                          default_value: float = AIR_HU) -> sitk.Image:
    """``geometry.resample_image`` that bins in the input's own pixel type before any float32 copy.

    ``BinShrink`` of an integer image rounds each block's mean to the nearest integer
    (at most 0.5 HU off); the float32 copy is then the small binned image, not the
    scan. A reference covering the whole scan also skips ``RegionOfInterest``'s copy.
    """
    target = float(min(reference.GetSpacing()))
    start, stop = geometry.index_region(image, geometry.physical_box(reference).expanded(2 * target))
    if np.any(stop <= start):
        return sitk.Resample(sitk.Image([1, 1, 1], sitk.sitkFloat32), reference, sitk.Transform(), sitk.sitkLinear,
                             default_value)
    source = image
    if np.any(start > 0) or np.any(stop < np.array(image.GetSize())):
        source = sitk.RegionOfInterest(image, [int(s) for s in stop - start], [int(s) for s in start])
    if antialias:
        factors = np.maximum(np.floor(target / np.array(source.GetSpacing())).astype(int), 1)
        if np.any(factors > 1):
            source = sitk.BinShrink(source, [int(f) for f in np.minimum(factors, source.GetSize())])
        source = geometry.smooth_to_resolution(sitk.Cast(source, sitk.sitkFloat32), target)
    return sitk.Resample(source, reference, sitk.Transform(), sitk.sitkLinear, default_value, sitk.sitkFloat32)


def _sub_grid(canonical: sitk.Image, lower: np.ndarray, upper: np.ndarray) -> sitk.Image:
    """The part [lower, upper) (z, y, x indices) of a canonical grid, as a reference image."""
    return sitk.RegionOfInterest(canonical, [int(n) for n in (upper - lower)[::-1]], [int(i) for i in lower[::-1]])


def _resampled(probability: np.ndarray, grid: sitk.Image, onto: sitk.Image, default: float) -> np.ndarray:
    image = geometry.array_to_image(np.ascontiguousarray(probability), grid)
    return sitk.GetArrayFromImage(sitk.Resample(image, onto, sitk.Transform(), sitk.sitkLinear, default,
                                                sitk.sitkFloat32))


def restore_class_boxes(probabilities: np.ndarray, canonical: sitk.Image, target: sitk.Image) -> np.ndarray:
    """``geometry.restore_labels`` resampling each class only where it can win.

    Exact: linear interpolation is a convex combination of 8 neighbours, so a class
    below 1/C at all of them stays below 1/C there and cannot be the argmax (the
    winner is always >= 1/C because the C probabilities sum to 1). Each vertebra
    class is resampled in the box of its voxels >= 1/C (plus one voxel), background
    only in the union of those boxes; everything outside is background.
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
    lower = np.min([b[0] for b in boxes.values()], axis=0)
    upper = np.max([b[1] for b in boxes.values()], axis=0)
    union = _sub_grid(canonical, lower, upper)
    start, stop = geometry.index_region(target, geometry.physical_box(union))
    if np.any(stop <= start):
        return result
    region = sitk.RegionOfInterest(target, [int(s) for s in stop - start], [int(s) for s in start])
    best = _resampled(probabilities[0, lower[0]:upper[0], lower[1]:upper[1], lower[2]:upper[2]], union, region, 1.0)
    label = np.zeros(best.shape, dtype=np.uint8)
    for cls, (lo, hi) in boxes.items():
        grid = _sub_grid(canonical, lo, hi)
        first, last = geometry.index_region(region, geometry.physical_box(grid))
        if np.any(last <= first):
            continue
        part = sitk.RegionOfInterest(region, [int(s) for s in last - first], [int(s) for s in first])
        resampled = _resampled(probabilities[cls, lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], grid, part, 0.0)
        view = tuple(slice(int(a), int(b)) for a, b in zip(first[::-1], last[::-1]))
        better = resampled > best[view]
        best[view][better] = resampled[better]
        label[view][better] = cls
    result[start[2]:stop[2], start[1]:stop[1], start[0]:stop[0]] = label
    return result


def gzip_trailer_size(path: Path) -> int:
    """The uncompressed length (mod 2**32) a gzip file's trailer states: O(1) instead of decompressing."""
    with path.open("rb") as stream:
        stream.seek(-4, 2)
        return int.from_bytes(stream.read(4), "little")


def exact_patch_crop(box: geometry.Box, spacing_mm: float, patch_zyx: tuple[int, int, int], multiple: int
                     ) -> sitk.Image:
    """A crop grid of exactly max(patch, box) voxels: no extra voxel that costs a second window per axis."""
    needed = np.ceil(box.size / spacing_mm - 1e-6).astype(int) + 1
    voxels = np.maximum(needed, np.array(patch_zyx[::-1]))
    voxels = (np.ceil(voxels / multiple) * multiple).astype(int)
    reference = sitk.Image([int(v) for v in voxels], sitk.sitkUInt8)
    reference.SetSpacing([spacing_mm] * 3)
    reference.SetOrigin([float(o) for o in box.center - (voxels - 1) * spacing_mm / 2])
    return reference


def sliding_window_batched(net: torch.nn.Module, volume: np.ndarray, *, patch: tuple[int, int, int],
                           device: torch.device, pad_value: float, overlap: float = 0.5, activation: str = "softmax",
                           on_window: Callable[[int, int], None] | None = None, batch: int = 2) -> np.ndarray:
    """``inference.sliding_window`` with ``batch`` windows per forward pass.

    PyTorch's CPU convolution picks oneDNN (mkldnn) only when N*C*D*H > 20480 or N > 1
    (a heuristic made for 2D); the localizer's small 48^3 windows fall to the slow
    reference kernel (``slow_conv3d_forward``) at every layer with N = 1.
    """
    shape = padded_shape(volume.shape, patch, net.size_multiple)
    padded = np.full(shape, pad_value, dtype=np.float32)
    padded[: volume.shape[0], : volume.shape[1], : volume.shape[2]] = volume
    window = tuple(min(p, s) for p, s in zip(patch, shape))
    weights = gaussian_weights(window)
    regions = list(_windows(shape, window, overlap))
    accumulated: np.ndarray | None = None
    weight_sum = np.zeros(shape, dtype=np.float32)
    for first in range(0, len(regions), batch):
        group = regions[first:first + batch]
        x = torch.from_numpy(np.stack([padded[r] for r in group]))[:, None].to(device)
        with torch.inference_mode():
            logits = net(x).float().cpu()
        probs = torch.softmax(logits, dim=1) if activation == "softmax" else torch.sigmoid(logits)
        if accumulated is None:
            accumulated = np.zeros((probs.shape[1],) + shape, dtype=np.float32)
        for region, prob in zip(group, probs.numpy()):
            accumulated[(slice(None),) + region] += prob * weights
            weight_sum[region] += weights
        if on_window is not None:
            on_window(min(first + batch, len(regions)), len(regions))
    accumulated /= weight_sum
    return accumulated[:, : volume.shape[0], : volume.shape[1], : volume.shape[2]]


def localizer_single_pass(net: torch.nn.Module, volume: np.ndarray, device: torch.device) -> np.ndarray:
    """The localizer over the whole coarse volume in one forward pass (it is fully convolutional)."""
    shape = [int(np.ceil(n / net.size_multiple) * net.size_multiple) for n in volume.shape]
    padded = np.full(shape, PAD, dtype=np.float32)
    padded[: volume.shape[0], : volume.shape[1], : volume.shape[2]] = volume
    logits = predict_logits(net, padded, device)
    return torch.sigmoid(logits)[0, : volume.shape[0], : volume.shape[1], : volume.shape[2]].numpy()


def crop_reference_exact(box: geometry.Box, spec: ModelSpec, *, multiple_of: int) -> sitk.Image:
    """``segment.crop_reference`` grown to (patch - 1) voxel spacings, so a box that fits is one window per axis."""
    grow = np.maximum((np.array(spec.patch[::-1]) - 1) * spec.spacing_mm - box.size, 0.0) / 2
    return exact_patch_crop(box.expanded(grow), spec.spacing_mm, spec.patch, multiple_of)


def nifti_byte_count_from_trailer(p: Path, shown: str) -> int:
    """``io._nifti_byte_count`` from the gzip trailer (uncompressed length mod 2**32) instead of decompressing.

    A truncated file ends inside the compressed data, so its last four bytes are not the length.
    (Files over 4 GiB need the comparison modulo 2**32.)
    """
    return gzip_trailer_size(p) if p.name.lower().endswith(".gz") else p.stat().st_size


PROTOTYPES = {
    "read": (io, "_nifti_byte_count", nifti_byte_count_from_trailer),
    "resample": (geometry, "resample_image", resample_shrink_first),
    "localizer_batch": (localize, "sliding_window", sliding_window_batched),
    "crop": (segment, "crop_reference", crop_reference_exact),
    "restore": (geometry, "restore_labels", restore_class_boxes),
    "seg_nrrd": (seg_nrrd.slicerio, "write_segmentation",
                 functools.partial(seg_nrrd.slicerio.write_segmentation, compression_level=1)),
}


def apply_prototypes(names: str = "all") -> list[str]:
    """Put the named prototypes (comma-separated keys of ``PROTOTYPES``, or ``all``) in place; their names."""
    chosen = list(PROTOTYPES) if names == "all" else [n.strip() for n in names.split(",") if n.strip()]
    unknown = sorted(set(chosen) - set(PROTOTYPES))
    if unknown:
        raise ValueError(f"unknown prototypes {unknown}; choose from {', '.join(PROTOTYPES)}")
    for name in chosen:
        owner, attribute, replacement = PROTOTYPES[name]
        setattr(owner, attribute, replacement)
    return chosen
