"""SynthSeg-style synthetic CT images from real label maps (e.g. TotalSegmentator maps).

A label map (z, y, x) on an isotropic grid becomes an HU-like image: per-class
intensities drawn around tissue priors (``mode="ct"``) or fully random
(``mode="random"``), bone with a bright cortical rim, a body outline filled
with a fat/muscle mix, air outside. Acquisition effects (noise, blur, bias,
resolution) are left to :func:`LumbarSegLib.training.augment.random_intensity`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Collection

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from scipy import ndimage

from LumbarSegLib.labels import SACRUM_VALUE, VERSE_VALUE

AIR_HU = -1000.0
BONE_THRESHOLD_HU = 200.0  # a class whose prior mean reaches this is drawn as bone
BONE_PRIOR = (250.0, 60.0)  # cancellous bone: mean HU, sd of the per-sample mean
FAT_HU = (-100.0, 15.0)
MUSCLE_HU = (45.0, 10.0)
DISC_HU = (80.0, 15.0)

_BONE_PREFIXES = ("vertebrae_", "sacrum", "hip_", "femur_", "humerus_", "scapula_", "clavicula_",
                  "sternum", "skull", "rib_")
_GAS_PREFIXES = ("colon", "small_bowel", "duodenum", "stomach")
# (name prefix, mean HU, sd of the per-sample mean); first match wins.
_SOFT_PRIORS: tuple[tuple[str, float, float], ...] = (
    ("costal_cartilages", 110.0, 30.0),
    ("lung_", -830.0, 50.0),
    ("trachea", -950.0, 30.0),
    ("kidney_cyst", 10.0, 8.0),
    ("kidney", 45.0, 35.0),
    ("liver", 55.0, 15.0),
    ("spleen", 50.0, 15.0),
    ("gallbladder", 10.0, 10.0),
    ("urinary_bladder", 10.0, 10.0),
    ("pancreas", 35.0, 15.0),
    ("adrenal", 25.0, 15.0),
    ("prostate", 35.0, 10.0),
    ("thyroid", 90.0, 30.0),
    ("brain", 35.0, 5.0),
    ("spinal_cord", 25.0, 10.0),
    ("colon", -20.0, 30.0),
    ("small_bowel", 20.0, 20.0),
    ("duodenum", 20.0, 20.0),
    ("stomach", 25.0, 20.0),
    ("esophagus", 35.0, 15.0),
    ("heart", 45.0, 25.0),
    ("atrial_appendage", 45.0, 25.0),
    ("aorta", 45.0, 40.0),
    ("artery", 45.0, 40.0),
    ("vein", 45.0, 35.0),
    ("vena", 45.0, 35.0),
    ("trunk", 45.0, 40.0),
    ("gluteus", 45.0, 10.0),
    ("autochthon", 45.0, 10.0),
    ("iliopsoas", 45.0, 10.0),
)
_DEFAULT_SOFT = (40.0, 20.0)


def load_total_map(path: str | Path, classes_json: str | Path) -> tuple[sitk.Image, dict[int, str]]:
    """Read a TotalSegmentator-style label map and its ``{"id": "name"}`` class list."""
    names = json.loads(Path(classes_json).read_text())
    image = sitk.ReadImage(str(path))
    pixel = sitk.sitkUInt8 if max(int(k) for k in names) < 256 else sitk.sitkUInt16
    return sitk.Cast(image, pixel), {int(key): str(name) for key, name in names.items()}


def _lookup(values: dict[int, float], size: int, dtype: np.dtype, default: float = 0) -> np.ndarray:
    """Return a table of ``size`` entries: ``values`` at their keys, ``default`` elsewhere."""
    table = np.full(size, default, dtype=dtype)
    for key, value in values.items():
        if key < size:
            table[key] = value
    return table


def total_to_verse(total: np.ndarray, class_names: dict[int, str]) -> np.ndarray:
    """Map TotalSegmentator v2 classes to VerSe values (uint8).

    ``vertebrae_C1``..``vertebrae_L5`` keep their level; ``vertebrae_S1`` and
    ``sacrum`` both become the sacrum (26); every other class becomes 0.
    """
    values = {}
    for key, name in class_names.items():
        level = name[len("vertebrae_"):] if name.startswith("vertebrae_") else None
        if name == "sacrum" or level == "S1":
            values[key] = SACRUM_VALUE
        elif level in VERSE_VALUE:
            values[key] = VERSE_VALUE[level]
    table = _lookup(values, max(int(total.max()), max(class_names)) + 1, np.uint8)
    return table[total]


def tissue_hu_priors(class_names: dict[int, str]) -> dict[int, tuple[float, float]]:
    """Return ``{class: (mean HU, sd of the per-sample mean)}`` from each class name.

    Bone classes get the cancellous prior (mean >= ``BONE_THRESHOLD_HU``, which
    makes :func:`synth_image` add a cortical rim); unknown names get soft tissue.
    """
    priors = {}
    for key, name in class_names.items():
        if name.startswith(_BONE_PREFIXES):
            priors[key] = BONE_PRIOR
            continue
        match = next(((mean, sd) for prefix, mean, sd in _SOFT_PRIORS if name.startswith(prefix)), None)
        priors[key] = match or _DEFAULT_SOFT
    return priors


def gas_classes(class_names: dict[int, str]) -> set[int]:
    """Return the classes whose lumen may hold gas (bowel, stomach)."""
    return {key for key, name in class_names.items() if name.startswith(_GAS_PREFIXES)}


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], cell_vox: float) -> np.ndarray:
    """Return a smooth random field in [-1, 1] with features about ``cell_vox`` voxels wide."""
    coarse = tuple(int(np.ceil(n / max(cell_vox, 1.0))) + 1 for n in shape)
    field = torch.from_numpy(rng.uniform(-1.0, 1.0, (1, 1, *coarse)).astype(np.float32))
    return F.interpolate(field, size=shape, mode="trilinear", align_corners=True)[0, 0].numpy()


def _dilate(mask: np.ndarray, radius_vox: int) -> np.ndarray:
    """Dilate a boolean mask by a cube of half-width ``radius_vox``."""
    if radius_vox <= 0:
        return mask
    return ndimage.maximum_filter(mask.view(np.uint8), size=2 * radius_vox + 1) > 0


def _within(seeds: np.ndarray, distance_mm: float, spacing_mm: float) -> np.ndarray:
    """Return the voxels within ``distance_mm`` of a seed voxel (none without seeds)."""
    if not seeds.any():
        return seeds
    return ndimage.distance_transform_edt(~seeds, sampling=spacing_mm) <= distance_mm


def _body_mask(foreground: np.ndarray, rng: np.random.Generator, *, spacing_mm: float,
               spine_only: bool) -> np.ndarray:
    """Return a body-shaped mask around the labelled structures, filled per axial slice.

    Computed on a grid of about 8 mm and upsampled: the outline needs no detail.
    For spine-only maps the body extends mostly anteriorly (-y) of the spine.
    """
    factor = max(1, int(round(8.0 / spacing_mm)))
    shape = foreground.shape
    tensor = torch.from_numpy(foreground.astype(np.float32))[None, None]
    coarse = F.max_pool3d(tensor, factor, stride=factor, ceil_mode=True)[0, 0].numpy() > 0
    coarse_mm = factor * spacing_mm
    if spine_only:
        # Skin 30-80 mm behind the spine; an anterior disc makes the belly.
        posterior_mm, shift_mm = rng.uniform(30.0, 80.0), rng.uniform(60.0, 110.0)
        radius_mm = rng.uniform(shift_mm - 10.0, shift_mm + posterior_mm)
        shift = int(round(shift_mm / coarse_mm))
        anterior = np.zeros_like(coarse)
        if shift < coarse.shape[1]:
            anterior[:, : coarse.shape[1] - shift] = coarse[:, shift:]
        body = _within(coarse, posterior_mm, coarse_mm) | _within(anterior, radius_mm, coarse_mm)
    else:
        body = _within(coarse, rng.uniform(8.0, 30.0), coarse_mm)
    body = np.stack([ndimage.binary_fill_holes(plane) for plane in body])
    padded = tuple(n * factor for n in body.shape)
    smooth = F.interpolate(torch.from_numpy(body.astype(np.float32))[None, None], size=padded,
                           mode="trilinear", align_corners=False)[0, 0].numpy()
    return (smooth[: shape[0], : shape[1], : shape[2]] > 0.5) | foreground


def _boundary(labels: np.ndarray) -> np.ndarray:
    """Return voxels whose 6-neighbourhood holds another label (volume edges excluded)."""
    edge = np.zeros(labels.shape, bool)
    for axis in range(3):
        low = [slice(None)] * 3
        high = [slice(None)] * 3
        low[axis], high[axis] = slice(None, -1), slice(1, None)
        differs = labels[tuple(low)] != labels[tuple(high)]
        edge[tuple(low)] |= differs
        edge[tuple(high)] |= differs
    return edge


def synth_image(label_map: np.ndarray, rng: np.random.Generator, *, spacing_mm: float,
                priors: dict[int, tuple[float, float]] | None = None, mode: str = "ct",
                gas_labels: Collection[int] = ()) -> np.ndarray:
    """Draw a synthetic HU-like CT image for a label map.

    Args:
        label_map: (z, y, x) integer labels on an isotropic grid axis-aligned in
            LPS (y grows posteriorly), 0 = unlabelled.
        rng: the random generator.
        spacing_mm: voxel size (cortical partial volume, body margin, texture scale).
        priors: ``{class: (mean HU, sd)}`` (see :func:`tissue_hu_priors`); classes
            with mean >= ``BONE_THRESHOLD_HU`` are bone. None: the map holds only
            bones (e.g. a vertebra mask): every nonzero label is bone and the
            body is drawn around the spine, mostly anterior of it.
        mode: ``"ct"`` realistic HU, or ``"random"`` a random intensity per class
            (uniform in [-1000, 2000]) then blur and noise.
        gas_labels: classes that may hold gas pockets (``"ct"`` mode).

    Returns:
        float32 image, same shape as ``label_map``.
    """
    if mode not in ("ct", "random"):
        raise ValueError(f"unknown synth mode {mode!r}")
    labels = np.asarray(label_map).astype(np.intp, copy=False)
    present = np.unique(labels)
    spine_only = priors is None
    if priors is None:
        priors = {int(c): BONE_PRIOR for c in present if c != 0}
    body = _body_mask(labels > 0, rng, spacing_mm=spacing_mm, spine_only=spine_only)
    if mode == "random":
        return _random_contrast(labels, body, present, rng)
    return _ct_contrast(labels, body, present, priors, gas_labels, rng, spacing_mm=spacing_mm)


def _ct_contrast(labels: np.ndarray, body: np.ndarray, present: np.ndarray,
                 priors: dict[int, tuple[float, float]], gas_labels: Collection[int],
                 rng: np.random.Generator, *, spacing_mm: float) -> np.ndarray:
    """Realistic HU: class means around the priors, fat/muscle body, bone rims, gas, texture."""
    size = int(present.max()) + 1
    means = {int(c): rng.normal(*priors.get(int(c), _DEFAULT_SOFT)) for c in present if c != 0}
    image = _lookup(means, size, np.float32)[labels]
    texture = _lookup({c: rng.uniform(5.0, 25.0) for c in (0, *means)}, size, np.float32)
    is_bone = {c: 1.0 for c in means if priors.get(c, _DEFAULT_SOFT)[0] >= BONE_THRESHOLD_HU}
    bone = _lookup(is_bone, size, np.float32)[labels] > 0
    background = _soft_background(labels.shape, rng, spacing_mm=spacing_mm)
    # Unlabelled tissue touching bone is mostly disc and ligament.
    near_bone = _dilate(bone, max(1, int(round(4.0 / spacing_mm))))
    background = np.where(near_bone, np.float32(rng.normal(*DISC_HU)), background)
    unlabelled = labels == 0
    image[unlabelled] = np.where(body, background, np.float32(AIR_HU + rng.normal(0, 10)))[unlabelled]
    _add_gas(image, labels, gas_labels, rng, spacing_mm=spacing_mm)
    _add_cortex(image, labels, bone, rng, spacing_mm=spacing_mm)
    image += rng.standard_normal(labels.shape, dtype=np.float32) * texture[labels]
    # Partial volume at the class borders.
    return ndimage.gaussian_filter(image, sigma=rng.uniform(0.5, 1.0), truncate=3.0)


def _soft_background(shape: tuple[int, ...], rng: np.random.Generator, *, spacing_mm: float) -> np.ndarray:
    """Return unlabelled body tissue: a smooth random mix of fat and muscle."""
    fat, muscle = rng.normal(*FAT_HU), rng.normal(*MUSCLE_HU)
    field = _smooth_noise(rng, shape, rng.uniform(10.0, 30.0) / spacing_mm)
    fraction = 1.0 / (1.0 + np.exp(-8.0 * (field - rng.uniform(-0.5, 0.5))))
    return (fat + (muscle - fat) * fraction).astype(np.float32)


def _add_gas(image: np.ndarray, labels: np.ndarray, gas_labels: Collection[int], rng: np.random.Generator,
             *, spacing_mm: float) -> None:
    """Replace a random part of the gas-bearing classes by bowel gas, in place."""
    lumen = np.isin(labels, list(gas_labels)) if gas_labels else None
    if lumen is None or not lumen.any():
        return
    field = _smooth_noise(rng, labels.shape, rng.uniform(8.0, 20.0) / spacing_mm)
    gas = lumen & (field > rng.uniform(0.0, 0.8))
    image[gas] = rng.normal(-900.0, 50.0)


def _add_cortex(image: np.ndarray, labels: np.ndarray, bone: np.ndarray, rng: np.random.Generator,
                *, spacing_mm: float) -> None:
    """Brighten the outer shell of bone classes, in place.

    The cortex (about 1 mm at 1000-1600 HU) is thinner than a voxel at coarse
    spacing, so the rim voxel gets the partial-volume mix with cancellous bone.
    """
    if not bone.any():
        return
    thickness_mm = rng.uniform(0.8, 1.5)
    width = max(1, int(round(thickness_mm / spacing_mm)))
    rim = _boundary(labels) & bone
    if width > 1:
        rim = _dilate(rim, width - 1) & bone
    fraction = min(1.0, thickness_mm / spacing_mm)
    cortex = np.float32(rng.uniform(1000.0, 1600.0))
    image[rim] = image[rim] + (cortex - image[rim]) * np.float32(fraction)


def _random_contrast(labels: np.ndarray, body: np.ndarray, present: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
    """SynthSeg contrast: every class (and body / outside) uniform in [-1000, 2000], blur, noise."""
    size = int(present.max()) + 1
    table = rng.uniform(-1000.0, 2000.0, size).astype(np.float32)
    image = table[labels]
    unlabelled = labels == 0
    inside, outside = rng.uniform(-1000.0, 2000.0, 2).astype(np.float32)
    image[unlabelled] = np.where(body[unlabelled], inside, outside)
    texture = rng.uniform(0.0, 60.0, size).astype(np.float32)[labels]
    image += rng.standard_normal(labels.shape, dtype=np.float32) * texture
    image = ndimage.gaussian_filter(image, sigma=rng.uniform(0.3, 1.5), truncate=3.0)
    image += rng.standard_normal(labels.shape, dtype=np.float32) * np.float32(rng.uniform(0.0, 40.0))
    return image.astype(np.float32, copy=False)
