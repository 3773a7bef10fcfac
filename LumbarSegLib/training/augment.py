"""Spatial and intensity augmentation of (z, y, x) CT training samples.

Arrays are (z, y, x) on an isotropic grid, axis-aligned in LPS, image in HU,
labels opaque integer classes, ``valid`` False where the label is unknown.
Every random choice comes from the ``np.random.Generator`` passed in, so a
seed reproduces a sample exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from scipy.spatial.transform import Rotation

AIR_HU = -1000.0


@dataclass(frozen=True)
class SpatialParams:
    """One drawn spatial transform.

    Attributes:
        matrix: 3x3 forward map of (z, y, x) offsets from the source centre to
            offsets from the output centre (content is rotated/scaled by it).
        displacement_mm: optional (3, gz, gy, gx) elastic displacements in mm
            (z, y, x components) on a coarse grid spanning the output patch;
            added to the source position of each output voxel.
    """

    matrix: np.ndarray
    displacement_mm: np.ndarray | None = None


def spatial_matrix(*, rotation_deg: Sequence[float] = (0.0, 0.0, 0.0),
                   scale: Sequence[float] = (1.0, 1.0, 1.0), flip_lr: bool = False) -> np.ndarray:
    """Return the forward 3x3 matrix ``flip @ diag(scale) @ rotation`` on (z, y, x) offsets.

    ``rotation_deg`` are extrinsic angles about the z, y, x axes (right-handed in
    (z, y, x) order: +90 degrees about z turns +y into +x). ``flip_lr`` mirrors x.
    """
    rotation = Rotation.from_euler("xyz", list(rotation_deg), degrees=True).as_matrix()
    flip = np.diag([1.0, 1.0, -1.0 if flip_lr else 1.0])
    return flip @ np.diag(np.asarray(scale, dtype=float)) @ rotation


def draw_spatial(rng: np.random.Generator, *, out_shape: Sequence[int], spacing_mm: float,
                 rotation_deg: Sequence[float] = (10.0, 10.0, 10.0),
                 scale: tuple[float, float] = (0.85, 1.15), anisotropic_scale: float = 0.05,
                 elastic_mm: float = 4.0, elastic_grid_mm: float = 40.0,
                 flip_lr: bool = False) -> SpatialParams:
    """Draw a random affine (+ elastic) transform; see :func:`random_spatial` for the options."""
    angles = rng.uniform(-1.0, 1.0, 3) * np.asarray(rotation_deg, dtype=float)
    per_axis = rng.uniform(scale[0], scale[1]) * (1.0 + rng.uniform(-1.0, 1.0, 3) * anisotropic_scale)
    flip = bool(flip_lr and rng.random() < 0.5)
    matrix = spatial_matrix(rotation_deg=angles, scale=per_axis, flip_lr=flip)
    displacement = None
    if elastic_mm > 0:
        extent_mm = np.asarray(out_shape, dtype=float) * spacing_mm
        grid = tuple(int(n) for n in np.maximum(2, np.ceil(extent_mm / elastic_grid_mm) + 1))
        displacement = (rng.standard_normal((3, *grid)) * elastic_mm).astype(np.float32)
    return SpatialParams(matrix=matrix, displacement_mm=displacement)


def _source_positions(out_shape: Sequence[int], center_vox: np.ndarray, params: SpatialParams,
                      spacing_mm: float) -> list[torch.Tensor]:
    """Return the z, y, x source voxel coordinates (each of ``out_shape``) of every output voxel."""
    inverse = np.linalg.inv(params.matrix)
    axes = [torch.arange(n, dtype=torch.float32) - (n - 1) / 2.0 for n in out_shape]
    views = [axes[0].view(-1, 1, 1), axes[1].view(1, -1, 1), axes[2].view(1, 1, -1)]
    dense = None
    if params.displacement_mm is not None:
        coarse = torch.from_numpy(params.displacement_mm / np.float32(spacing_mm))[None]
        dense = F.interpolate(coarse, size=tuple(out_shape), mode="trilinear", align_corners=True)[0]
    positions = []
    for i in range(3):
        position = (views[0] * float(inverse[i, 0]) + views[1] * float(inverse[i, 1])
                    + views[2] * float(inverse[i, 2]) + float(center_vox[i]))
        positions.append(position + dense[i] if dense is not None else position.expand(*out_shape))
    return positions


def _crop_box(positions: list[torch.Tensor], src_shape: Sequence[int]) -> tuple[slice, ...] | None:
    """Return the source box (one voxel of margin) holding every in-volume position, or None."""
    box = []
    for position, n in zip(positions, src_shape):
        low, high = torch.aminmax(position)
        start, stop = max(int(np.floor(float(low))) - 1, 0), min(int(np.ceil(float(high))) + 2, n)
        if start >= stop:
            return None
        # grid_sample maps every position into an extent of one voxel, so keep two.
        stop = min(n, max(stop, start + 2))
        box.append(slice(max(0, min(start, stop - 2)), stop))
    return tuple(box)


def _normalised_grid(positions: list[torch.Tensor], box: tuple[slice, ...]) -> torch.Tensor:
    """Return the grid_sample grid (1, D, H, W, 3): (x, y, z) positions normalised to the box."""
    grid = torch.empty((1, *positions[0].shape, 3), dtype=torch.float32)
    for i, (position, extent) in enumerate(zip(positions, box)):
        size = max(extent.stop - extent.start - 1, 1)
        grid[0, ..., 2 - i] = (position - extent.start) * (2.0 / size) - 1.0
    return grid


def apply_spatial(image: np.ndarray | None, labels: np.ndarray | None, valid: np.ndarray | None,
                  params: SpatialParams, *, spacing_mm: float, out_shape: Sequence[int] | None = None,
                  center_vox: Sequence[float] | None = None
                  ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray]:
    """Resample a sample once through ``params``.

    Only the source box that the output patch reaches is read, so cropping a
    small patch from a large volume is cheap.

    Args:
        image: float HU array or None.
        labels: integer label array (same shape) or None.
        valid: boolean known-label mask or None (all known).
        params: the transform (:func:`draw_spatial` or built by hand).
        spacing_mm: isotropic voxel size of input and output.
        out_shape: output shape (default: the input shape).
        center_vox: source voxel (z, y, x) that lands at the output centre
            (default: the input centre).

    Returns:
        ``(image, labels, valid)``: image float32 (linear, air -1000 HU outside
        the source), labels with the input dtype (nearest, 0 outside), valid
        bool (nearest, False outside the source); None stays None.
    """
    reference = next(a for a in (image, labels, valid) if a is not None)
    src_shape = reference.shape
    out_shape = tuple(src_shape if out_shape is None else out_shape)
    center = (np.asarray(src_shape, dtype=float) - 1) / 2 if center_vox is None else np.asarray(center_vox, float)
    positions = _source_positions(out_shape, center, params, spacing_mm)
    box = _crop_box(positions, src_shape)
    if box is None:
        return (None if image is None else np.full(out_shape, AIR_HU, np.float32),
                None if labels is None else np.zeros(out_shape, labels.dtype), np.zeros(out_shape, bool))
    grid = _normalised_grid(positions, box)

    ones = np.ones([s.stop - s.start for s in box], np.float32)
    channels = [ones, ones if valid is None else valid[box]] + ([] if labels is None else [labels[box]])
    stacked = torch.from_numpy(np.stack(channels).astype(np.float32))[None]
    nearest = F.grid_sample(stacked, grid, mode="nearest", padding_mode="zeros", align_corners=True)[0].numpy()
    inside = nearest[0] > 0.5
    out_image = None
    if image is not None:
        # Sampling HU + 1000 with zero padding blends the source edge into air.
        shifted = torch.from_numpy(np.asarray(image[box], dtype=np.float32) - AIR_HU)[None, None]
        sampled = F.grid_sample(shifted, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        out_image = np.where(inside, sampled[0, 0].numpy() + AIR_HU, np.float32(AIR_HU))
    out_labels = None if labels is None else nearest[2].astype(labels.dtype)
    return out_image, out_labels, inside & (nearest[1] > 0.5)


def random_spatial(image: np.ndarray | None, labels: np.ndarray | None, valid: np.ndarray | None,
                   rng: np.random.Generator, *, spacing_mm: float,
                   rotation_deg: Sequence[float] = (10.0, 10.0, 10.0),
                   scale: tuple[float, float] = (0.85, 1.15), anisotropic_scale: float = 0.05,
                   elastic_mm: float = 4.0, elastic_grid_mm: float = 40.0, flip_lr: bool = False,
                   out_shape: Sequence[int] | None = None, center_vox: Sequence[float] | None = None
                   ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray]:
    """Random affine + elastic deformation (and optional crop) in one resampling pass.

    Args:
        image, labels, valid: see :func:`apply_spatial`.
        rng: the random generator.
        spacing_mm: isotropic voxel size in mm.
        rotation_deg: maximum absolute rotation about z, y, x (uniform).
        scale: range of the isotropic zoom of the content (>1 enlarges).
        anisotropic_scale: extra per-axis relative zoom, uniform in +-this.
        elastic_mm: standard deviation of the elastic control-point
            displacements (0 disables the elastic part).
        elastic_grid_mm: control-point spacing of the elastic field.
        flip_lr: mirror left-right with probability 0.5 (vertebra levels do
            not depend on side, so labels stay valid).
        out_shape: output patch shape; only these voxels are computed.
        center_vox: source voxel at the patch centre (default: input centre).

    Returns:
        ``(image, labels, valid)`` as :func:`apply_spatial`.
    """
    reference = next(a for a in (image, labels, valid) if a is not None)
    shape = reference.shape if out_shape is None else out_shape
    params = draw_spatial(rng, out_shape=shape, spacing_mm=spacing_mm, rotation_deg=rotation_deg,
                          scale=scale, anisotropic_scale=anisotropic_scale, elastic_mm=elastic_mm,
                          elastic_grid_mm=elastic_grid_mm, flip_lr=flip_lr)
    return apply_spatial(image, labels, valid, params, spacing_mm=spacing_mm, out_shape=out_shape,
                         center_vox=center_vox)


def sample_center(labels: np.ndarray, rng: np.random.Generator, *, classes: Sequence[int] | None = None,
                  p_foreground: float = 0.67, jitter_vox: float = 0.0) -> np.ndarray:
    """Pick a patch centre (z, y, x voxel): a random voxel of a random present class, else uniform.

    Args:
        labels: label array.
        rng: the random generator.
        classes: classes to oversample (default: every nonzero value).
        p_foreground: probability of centring on a class voxel.
        jitter_vox: standard deviation of a Gaussian offset added to the centre.
    """
    shape = np.asarray(labels.shape)
    present = np.unique(labels)
    wanted = present[present != 0] if classes is None else np.intersect1d(present, classes)
    if wanted.size and rng.random() < p_foreground:
        voxels = np.flatnonzero(labels == rng.choice(wanted))
        center = np.asarray(np.unravel_index(rng.choice(voxels), labels.shape), dtype=float)
    else:
        center = rng.uniform(0, 1, 3) * (shape - 1)
    return center + rng.standard_normal(3) * jitter_vox


def _smooth_field(rng: np.random.Generator, shape: Sequence[int], *, points: int = 4) -> np.ndarray:
    """Return a smooth random field in [-1, 1] of ``shape`` (coarse grid upsampled trilinearly)."""
    coarse = torch.from_numpy(rng.uniform(-1.0, 1.0, (1, 1, points, points, points)).astype(np.float32))
    return F.interpolate(coarse, size=tuple(shape), mode="trilinear", align_corners=True)[0, 0].numpy()


def _low_resolution(image: np.ndarray, axis: int, factor: float) -> np.ndarray:
    """Average ``image`` into slabs ``factor`` voxels thick along ``axis`` and interpolate back."""
    size = list(image.shape)
    size[axis] = max(1, int(round(size[axis] / factor)))
    tensor = torch.from_numpy(np.ascontiguousarray(image))[None, None]
    low = F.interpolate(tensor, size=tuple(size), mode="area")
    return F.interpolate(low, size=image.shape, mode="trilinear", align_corners=False)[0, 0].numpy()


def random_intensity(image_hu: np.ndarray, rng: np.random.Generator, *, spacing_mm: float,
                     mask: np.ndarray | None = None, shift_hu: float = 40.0,
                     scale: tuple[float, float] = (0.9, 1.1), bias: float = 0.05,
                     noise_hu: tuple[float, float] = (0.0, 40.0), blur_vox: float = 1.2,
                     slice_mm: tuple[float, float] = (2.0, 5.0), p_low_resolution: float = 0.25,
                     gamma: tuple[float, float] = (0.9, 1.1), p_gamma: float = 0.15) -> np.ndarray:
    """Random CT appearance changes that keep HU semantics (air ~ -1000, bone bright).

    Steps: occasional gamma on the [-1000, 2000] HU window; global contrast
    (scale about 0 HU) and shift; smooth multiplicative bias on attenuation
    (HU + 1000, so air stays air); anisotropic Gaussian PSF blur; optional
    low-resolution simulation along one random axis (slab averaging to a
    slice thickness in ``slice_mm`` and back); Gaussian noise.

    Args:
        image_hu: (z, y, x) image in HU.
        rng: the random generator.
        spacing_mm: isotropic voxel size (for the slice thickness).
        mask: voxels to change (e.g. inside the scanned field of view);
            others are returned unchanged. Default: all.
        shift_hu, scale, bias, noise_hu, blur_vox, slice_mm, p_low_resolution,
        gamma, p_gamma: ranges and probabilities of the steps above.

    Returns:
        float32 image in HU.
    """
    image = np.asarray(image_hu, dtype=np.float32)
    out = image.copy()
    if rng.random() < p_gamma:
        window = (out - AIR_HU) / 3000.0
        inside = (window > 0) & (window < 1)
        out[inside] = window[inside] ** rng.uniform(*gamma) * 3000.0 + AIR_HU
    out = out * rng.uniform(*scale) + rng.uniform(-shift_hu, shift_hu)
    if bias > 0:
        gain = 1.0 + bias * _smooth_field(rng, out.shape)
        out = (out - AIR_HU) * gain + AIR_HU
    sigma = rng.uniform(0.0, blur_vox, 3)
    if sigma.max() > 0.1:
        out = ndimage.gaussian_filter(out, sigma=sigma, truncate=3.0)
    if rng.random() < p_low_resolution:
        factor = rng.uniform(*slice_mm) / spacing_mm
        if factor > 1.0:
            out = _low_resolution(out, int(rng.integers(3)), factor)
    out = out + rng.standard_normal(out.shape, dtype=np.float32) * np.float32(rng.uniform(*noise_hu))
    if mask is not None:
        out = np.where(mask, out, image)
    return out.astype(np.float32, copy=False)
