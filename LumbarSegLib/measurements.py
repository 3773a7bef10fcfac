"""Per-vertebra measurements for the report: volume, position, extent, cancellous bone HU, QA.

All positions are in RAS millimetres (Slicer's world; RAS = LPS with x and y negated).
Everything is computed from voxel centres in physical space, so no value depends on the
voxel spacing or the orientation of the grid beyond the voxelisation itself.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from . import labels as lbl

# Distance kept from the vertebra's surface: excludes the cortical shell (0.5-1 mm), the
# endplates and the partial-volume rim, with room for a segmentation boundary error.
CORE_DEPTH_MM = 4.0
# The body is the anterior part of the vertebra; its anterior 30 % (of the anterior-posterior
# extent of the whole vertebra, about 85-95 mm for a lumbar vertebra with its spinous process)
# lies inside the body (30-35 mm deep) and in front of the basivertebral veins and pedicles.
BODY_FRACTION = 0.3
LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])


def vertebra_measurements(ct: sitk.Image, labels: sitk.Image) -> dict[str, dict]:
    """Measure every lumbar level (L1..L5, L6) present in a label map.

    The cancellous core of the vertebral body is the set of vertebra voxels that are (1) at
    least ``CORE_DEPTH_MM`` from the vertebra's surface, by a signed Maurer distance map in
    millimetres computed on the vertebra's own mask (padded, so the field-of-view edge counts
    as surface), and (2) in the anterior ``BODY_FRACTION`` of the vertebra's extent along the
    patient's anterior axis (physical -y in LPS), which holds the body and none of the
    posterior elements. Its mean and standard deviation of CT values are reported in HU.

    Args:
        ct: CT in HU on the same grid as ``labels``.
        labels: label map with VerSe values (L1..L5 = 20..24, L6 = 25).

    Returns:
        ``{"L1": {...}, ...}`` in level order, each with ``voxel_count``, ``volume_ml``,
        ``centroid_ras_mm`` [x, y, z], ``bbox_ras_mm`` {``min``, ``max``} (the box around the
        vertebra's voxels, voxel extent included), ``cancellous_hu_mean``,
        ``cancellous_hu_std`` (``None`` when the core is empty), ``core_voxel_count``,
        ``touches_fov_border`` (a voxel on an outer face of the image) and ``components``
        (number of 26-connected components).
    """
    _check_same_grid(ct, labels)
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(sitk.Cast(labels, sitk.sitkUInt8) if labels.GetPixelID() != sitk.sitkUInt8 else labels)
    present = set(stats.GetLabels())
    return {
        lbl.VERSE_NAMES[value]: _measure_level(ct, labels, value, stats.GetBoundingBox(value))
        for value in lbl.OUTPUT_VALUES
        if value in present
    }


def _check_same_grid(ct: sitk.Image, labels: sitk.Image) -> None:
    same = (
        ct.GetSize() == labels.GetSize()
        and np.allclose(ct.GetSpacing(), labels.GetSpacing(), rtol=1e-5)
        and np.allclose(ct.GetOrigin(), labels.GetOrigin(), atol=1e-3)
        and np.allclose(ct.GetDirection(), labels.GetDirection(), atol=1e-5)
    )
    if not same:
        raise ValueError("CT and label map are not on the same grid")


def _measure_level(ct: sitk.Image, labels: sitk.Image, value: int, bbox: tuple[int, ...]) -> dict:
    start, size = list(bbox[:3]), list(bbox[3:])
    mask_image = sitk.RegionOfInterest(labels, size, start) == value
    mask = sitk.GetArrayViewFromImage(mask_image).astype(bool)
    hu = sitk.GetArrayFromImage(sitk.RegionOfInterest(ct, size, start))

    index_to_lps = np.array(labels.GetDirection()).reshape(3, 3) @ np.diag(labels.GetSpacing())
    kji = np.argwhere(mask)
    lps = (kji[:, ::-1] + start) @ index_to_lps.T + np.array(labels.GetOrigin())
    half_voxel = 0.5 * np.abs(index_to_lps).sum(axis=1)
    corners_ras = np.stack([lps.min(axis=0) - half_voxel, lps.max(axis=0) + half_voxel]) * LPS_TO_RAS

    core = np.zeros_like(mask)
    core[mask] = _body_core(mask_image, lps)
    core_hu = hu[core].astype(np.float64)
    image_size = np.array(labels.GetSize())
    voxel_ml = float(np.prod(labels.GetSpacing())) / 1000.0
    return {
        "voxel_count": int(len(kji)),
        "volume_ml": len(kji) * voxel_ml,
        "centroid_ras_mm": (lps.mean(axis=0) * LPS_TO_RAS).tolist(),
        "bbox_ras_mm": {"min": corners_ras.min(axis=0).tolist(), "max": corners_ras.max(axis=0).tolist()},
        "cancellous_hu_mean": float(core_hu.mean()) if core_hu.size else None,
        "cancellous_hu_std": float(core_hu.std()) if core_hu.size else None,
        "core_voxel_count": int(core_hu.size),
        "touches_fov_border": bool(min(start) == 0 or np.any(np.array(start) + size == image_size)),
        "components": _count_components(mask_image),
    }


def _body_core(mask_image: sitk.Image, lps: np.ndarray) -> np.ndarray:
    """Which of the vertebra's voxels (in ``np.argwhere`` order) belong to the body's core."""
    padded = sitk.ConstantPad(mask_image, [1, 1, 1], [1, 1, 1], 0)
    depth = sitk.SignedMaurerDistanceMap(padded, insideIsPositive=True, squaredDistance=False,
                                         useImageSpacing=True)
    mask = sitk.GetArrayViewFromImage(mask_image).astype(bool)
    depth_mm = sitk.GetArrayViewFromImage(depth)[1:-1, 1:-1, 1:-1][mask]
    anterior = -lps[:, 1]
    front = anterior.max()
    return (depth_mm >= CORE_DEPTH_MM) & (anterior >= front - BODY_FRACTION * (front - anterior.min()))


def _count_components(mask_image: sitk.Image) -> int:
    components = sitk.ConnectedComponentImageFilter()
    components.FullyConnectedOn()
    components.Execute(mask_image)
    return int(components.GetObjectCount())
