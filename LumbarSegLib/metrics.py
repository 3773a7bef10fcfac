"""Segmentation metrics in physical millimetres: Dice, HD95, ASSD and VerSe identification.

Conventions (all distances use the image spacing, never voxel units):

- A mask's surface is the set of its voxels removed by one binary erosion with
  the 6-connected structure, voxels on the image border included (as in MONAI
  and medpy).
- ``hd95`` is MONAI's symmetric ``compute_hausdorff_distance(percentile=95)``:
  the larger of the two directed 95th percentiles.  ``assd`` is MONAI's
  ``compute_average_surface_distance(symmetric=True)``: the mean over the
  distances of both surfaces pooled (Heimann's ASSD).
- Empty masks: two empty masks agree perfectly (Dice 1, HD95 0, ASSD 0); one
  empty mask against a non-empty one gives Dice 0 and infinite distances.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .boundary import surface
from .labels import OUTPUT_VALUES, VERSE_NAMES

# VerSe identification rule: the predicted centroid must lie closer than this.
IDENTIFICATION_DISTANCE_MM = 20.0
EVALUATED_LEVELS: tuple[int, ...] = OUTPUT_VALUES
# Grids that differ less than this (mm, or unitless for directions) are the same
# grid: NIfTI headers round spacings to float32 (3.0 vs 3.000000238).
_GRID_TOLERANCE = 1e-4


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Return the Dice coefficient of two boolean masks (1.0 if both are empty)."""
    pred, truth = _as_masks(pred, truth)
    total = np.count_nonzero(pred) + np.count_nonzero(truth)
    if total == 0:
        return 1.0
    return 2.0 * np.count_nonzero(pred & truth) / total


def surface_distances(
    pred_mask: np.ndarray, truth_mask: np.ndarray, spacing_zyx: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Return surface distances in mm: (pred surface -> truth, truth surface -> pred).

    Each array holds, for every surface voxel of the first mask, the distance to
    the nearest surface voxel of the other.  If the other mask is empty the
    distances are ``inf``; an empty mask contributes an empty array.
    """
    pred, truth = _crop_to_union(*_as_masks(pred_mask, truth_mask))
    pred_surface, truth_surface = surface(pred), surface(truth)
    return (
        _distances_to(truth_surface, pred_surface, spacing_zyx),
        _distances_to(pred_surface, truth_surface, spacing_zyx),
    )


def hd95(pred_mask: np.ndarray, truth_mask: np.ndarray, spacing_zyx: Sequence[float]) -> float:
    """Return the symmetric 95th percentile Hausdorff distance in mm."""
    return _hd95_of(*surface_distances(pred_mask, truth_mask, spacing_zyx))


def assd(pred_mask: np.ndarray, truth_mask: np.ndarray, spacing_zyx: Sequence[float]) -> float:
    """Return the average symmetric surface distance in mm."""
    return _assd_of(*surface_distances(pred_mask, truth_mask, spacing_zyx))


def centroid_mm(mask: np.ndarray, image: sitk.Image) -> np.ndarray:
    """Return the physical (LPS, mm) centroid of a (z, y, x) mask on ``image``'s grid."""
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != tuple(reversed(image.GetSize())):
        raise ValueError(f"mask shape {mask.shape} does not match image size {image.GetSize()}")
    indices = np.argwhere(mask)
    if len(indices) == 0:
        raise ValueError("an empty mask has no centroid")
    index_xyz = indices.mean(axis=0)[::-1]
    return np.array(image.TransformContinuousIndexToPhysicalPoint([float(v) for v in index_xyz]))


def per_level_metrics(
    pred: sitk.Image, truth: sitk.Image, *, levels: Sequence[int] = EVALUATED_LEVELS
) -> dict:
    """Compare a predicted label map with the truth, level by level (VerSe values).

    Only levels present in the truth are evaluated.  Each gets ``dice``,
    ``hd95``, ``assd`` (mm), ``centroid_distance`` (mm between predicted and
    true centroid), ``predicted`` and ``identified``.  A level is identified
    (VerSe rule) when the predicted centroid of the same label lies closer than
    20 mm to the true centroid and no other labelled truth vertebra is closer.
    A level missing from the prediction is not identified, has Dice 0,
    ``hd95``/``assd`` = inf and ``centroid_distance`` = None.

    Predicted levels absent from the truth are ``false_positives`` only if
    their centroid lies within the superior-inferior range covered by the
    truth's labels (any label value); VerSe truths label only some levels, so
    a prediction outside that range is listed in ``outside_labelled_range``
    and is not an error.

    ``pred`` is resampled (nearest neighbour) onto ``truth``'s grid if the
    grids differ; images that do not overlap in space raise ``ValueError``.
    """
    pred = _on_grid_of(pred, truth)
    pred_array = sitk.GetArrayViewFromImage(pred)
    truth_array = sitk.GetArrayViewFromImage(truth)
    spacing_zyx = truth.GetSpacing()[::-1]
    truth_centroids = {
        int(value): centroid_mm(truth_array == value, truth)
        for value in np.unique(truth_array)
        if value != 0
    }
    level_results = {
        VERSE_NAMES[value]: _level_metrics(
            pred_array == value, truth_array == value, value, truth_centroids, truth, spacing_zyx
        )
        for value in levels
        if value in truth_centroids
    }
    false_positives, outside = _unmatched_levels(pred_array, truth_array, levels, truth_centroids, truth)
    return {"levels": level_results, "false_positives": false_positives, "outside_labelled_range": outside}


def _as_masks(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    if pred.shape != truth.shape:
        raise ValueError(f"mask shapes differ: {pred.shape} vs {truth.shape}")
    return pred, truth


def _crop_to_union(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Everything outside the union's bounding box is background for both masks,
    # exactly what erosion's border_value=0 assumes, so cropping changes no
    # distance; it only makes the distance transform cheap.
    boxes = ndimage.find_objects((pred | truth).astype(np.uint8))
    if not boxes:
        return pred, truth
    return pred[boxes[0]], truth[boxes[0]]


def _distances_to(target_surface: np.ndarray, source_surface: np.ndarray, spacing_zyx: Sequence[float]) -> np.ndarray:
    if not target_surface.any():
        return np.full(np.count_nonzero(source_surface), np.inf)
    distance_map = ndimage.distance_transform_edt(~target_surface, sampling=tuple(spacing_zyx))
    return distance_map[source_surface]


def _hd95_of(pred_to_truth: np.ndarray, truth_to_pred: np.ndarray) -> float:
    if pred_to_truth.size == 0 and truth_to_pred.size == 0:
        return 0.0
    if pred_to_truth.size == 0 or truth_to_pred.size == 0:
        return float("inf")
    return float(max(np.percentile(pred_to_truth, 95), np.percentile(truth_to_pred, 95)))


def _assd_of(pred_to_truth: np.ndarray, truth_to_pred: np.ndarray) -> float:
    if pred_to_truth.size == 0 and truth_to_pred.size == 0:
        return 0.0
    if pred_to_truth.size == 0 or truth_to_pred.size == 0:
        return float("inf")
    return float(np.concatenate([pred_to_truth, truth_to_pred]).mean())


def _level_metrics(
    pred_mask: np.ndarray,
    truth_mask: np.ndarray,
    value: int,
    truth_centroids: dict[int, np.ndarray],
    grid: sitk.Image,
    spacing_zyx: Sequence[float],
) -> dict:
    if not pred_mask.any():
        return {
            "dice": 0.0, "hd95": float("inf"), "assd": float("inf"),
            "centroid_distance": None, "predicted": False, "identified": False,
        }
    distances = surface_distances(pred_mask, truth_mask, spacing_zyx)
    centroid = centroid_mm(pred_mask, grid)
    to_truth = {v: float(np.linalg.norm(centroid - c)) for v, c in truth_centroids.items()}
    identified = to_truth[value] < IDENTIFICATION_DISTANCE_MM and to_truth[value] <= min(to_truth.values())
    return {
        "dice": dice(pred_mask, truth_mask),
        "hd95": _hd95_of(*distances),
        "assd": _assd_of(*distances),
        "centroid_distance": to_truth[value],
        "predicted": True,
        "identified": bool(identified),
    }


def _unmatched_levels(
    pred_array: np.ndarray,
    truth_array: np.ndarray,
    levels: Sequence[int],
    truth_centroids: dict[int, np.ndarray],
    grid: sitk.Image,
) -> tuple[list[str], list[str]]:
    present = set(np.unique(pred_array).tolist())
    unmatched = [v for v in levels if v in present and v not in truth_centroids]
    if not unmatched:
        return [], []
    if truth_centroids:
        labelled_si = _superior_coordinates(np.argwhere(truth_array != 0), grid)
        si_range = (labelled_si.min(), labelled_si.max())
    else:
        si_range = (np.inf, -np.inf)  # nothing labelled: every prediction is unverifiable
    false_positives, outside = [], []
    for value in unmatched:
        si = centroid_mm(pred_array == value, grid)[2]
        (false_positives if si_range[0] <= si <= si_range[1] else outside).append(VERSE_NAMES[value])
    return false_positives, outside


def _superior_coordinates(indices_zyx: np.ndarray, grid: sitk.Image) -> np.ndarray:
    """Return the physical S coordinate (LPS z, mm) of voxel indices given as (z, y, x)."""
    direction = np.array(grid.GetDirection()).reshape(3, 3)
    row = direction[2] * np.array(grid.GetSpacing())
    return grid.GetOrigin()[2] + indices_zyx[:, ::-1] @ row


def _on_grid_of(pred: sitk.Image, truth: sitk.Image) -> sitk.Image:
    if pred.GetDimension() != 3 or truth.GetDimension() != 3:
        raise ValueError("prediction and truth must be 3D images")
    if _same_grid(pred, truth):
        return pred
    if not _boxes_overlap(pred, truth):
        raise ValueError(
            "prediction and truth do not overlap in physical space: "
            f"prediction origin {pred.GetOrigin()} size {pred.GetSize()}, "
            f"truth origin {truth.GetOrigin()} size {truth.GetSize()}"
        )
    return sitk.Resample(pred, truth, sitk.Transform(), sitk.sitkNearestNeighbor, 0, pred.GetPixelID())


def _same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=0, atol=_GRID_TOLERANCE)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), rtol=0, atol=_GRID_TOLERANCE * 10)
        and np.allclose(a.GetDirection(), b.GetDirection(), rtol=0, atol=_GRID_TOLERANCE)
    )


def _physical_box(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    size = image.GetSize()
    corners = np.array(
        [
            image.TransformContinuousIndexToPhysicalPoint(
                [-0.5 if c == 0 else n - 0.5 for c, n in zip(corner, size)]
            )
            for corner in np.ndindex(2, 2, 2)
        ]
    )
    return corners.min(axis=0), corners.max(axis=0)


def _boxes_overlap(a: sitk.Image, b: sitk.Image) -> bool:
    (a_low, a_high), (b_low, b_high) = _physical_box(a), _physical_box(b)
    return bool(np.all(a_low < b_high) and np.all(b_low < a_high))
