"""Tests of LumbarSegLib.metrics against analytic values on anisotropic grids."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial import cKDTree

from LumbarSegLib.metrics import (
    assd,
    centroid_mm,
    dice,
    hd95,
    per_level_metrics,
    surface_distances,
)

L1, L2, L3, L4, L5, L6, T12 = 20, 21, 22, 23, 24, 25, 19


def box(shape, start, stop) -> np.ndarray:
    """A boolean (z, y, x) array with the half-open box [start, stop) set."""
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(a, b) for a, b in zip(start, stop))] = True
    return mask


def label_image(array: np.ndarray, *, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=None) -> sitk.Image:
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    return image


# --- Dice -------------------------------------------------------------------

def test_dice_of_two_overlapping_cubes_is_analytic():
    a = box((20, 20, 20), (2, 2, 2), (12, 12, 12))
    b = box((20, 20, 20), (2, 2, 6), (12, 12, 16))  # shifted by 4 in x: overlap 10*10*6
    assert dice(a, b) == pytest.approx(2 * 600 / 2000)


def test_dice_of_disjoint_masks_is_zero():
    assert dice(box((8, 8, 8), (0, 0, 0), (2, 2, 2)), box((8, 8, 8), (4, 4, 4), (6, 6, 6))) == 0.0


def test_identical_masks_have_dice_one_and_zero_distances():
    a = box((16, 16, 16), (3, 4, 5), (11, 12, 9))
    spacing = (3.0, 0.7, 1.3)
    assert dice(a, a) == 1.0
    assert hd95(a, a, spacing) == 0.0
    assert assd(a, a, spacing) == 0.0


def test_empty_masks():
    empty = np.zeros((6, 6, 6), dtype=bool)
    full = box((6, 6, 6), (1, 1, 1), (4, 4, 4))
    spacing = (2.0, 1.0, 1.0)
    # Both empty: perfect agreement.
    assert dice(empty, empty) == 1.0
    assert hd95(empty, empty, spacing) == 0.0
    assert assd(empty, empty, spacing) == 0.0
    # One empty: no overlap, infinite distances, in both directions.
    for pred, truth in ((empty, full), (full, empty)):
        assert dice(pred, truth) == 0.0
        assert hd95(pred, truth, spacing) == math.inf
        assert assd(pred, truth, spacing) == math.inf
    pred_to_truth, truth_to_pred = surface_distances(full, empty, spacing)
    assert pred_to_truth.size == 26 and np.all(np.isinf(pred_to_truth))  # 3^3 cube minus its centre
    assert truth_to_pred.size == 0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shapes differ"):
        dice(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)))


# --- surface distances --------------------------------------------------------

@pytest.mark.parametrize("axis", [0, 1, 2])
def test_plates_shifted_along_each_axis_are_k_times_that_spacing_apart(axis):
    # A one-voxel plate is all surface; shifted by k along its normal, every
    # surface voxel is exactly k * spacing[axis] from the other plate.
    spacing = (3.0, 0.8, 1.5)
    k = 2
    start, stop = [2, 2, 2], [9, 9, 9]
    stop[axis] = start[axis] + 1
    a = box((12, 12, 12), start, stop)
    b = np.roll(a, k, axis=axis)
    expected = k * spacing[axis]
    pred_to_truth, truth_to_pred = surface_distances(a, b, spacing)
    np.testing.assert_allclose(pred_to_truth, expected)
    np.testing.assert_allclose(truth_to_pred, expected)
    assert hd95(a, b, spacing) == pytest.approx(expected)
    assert assd(a, b, spacing) == pytest.approx(expected)


def test_cube_shifted_on_anisotropic_grid_gives_analytic_hd95_and_assd():
    # A 10^3 voxel cube shifted by k=2 voxels along z, spacing (0.5, 3.0, 2.5).
    # In-plane steps (>= 2.5 mm) are longer than the shift (1 mm), so each
    # surface voxel's nearest surface voxel of the other cube lies along z:
    #   bottom cap (100 voxels):           k * sz = 1.0 mm
    #   side ring at z = 1 (36 voxels):    1 * sz = 0.5 mm
    #   side rings at z = 2..9 (288):      0 (on the other cube's sides)
    #   top cap interior (64 voxels):      k * sz = 1.0 mm (to the other top cap)
    # 488 surface voxels, the same distribution from either side.
    spacing = (0.5, 3.0, 2.5)
    a = box((16, 14, 14), (2, 2, 2), (12, 12, 12))
    b = box((16, 14, 14), (4, 2, 2), (14, 12, 12))
    pred_to_truth, truth_to_pred = surface_distances(a, b, spacing)
    expected = np.array([0.0] * 288 + [0.5] * 36 + [1.0] * 164)
    np.testing.assert_allclose(np.sort(pred_to_truth), expected)
    np.testing.assert_allclose(np.sort(truth_to_pred), expected)
    assert assd(a, b, spacing) == pytest.approx(182 / 488)
    assert hd95(a, b, spacing) == pytest.approx(1.0)


def test_surface_distances_match_brute_force_nearest_neighbours():
    rng = np.random.default_rng(3)
    spacing = (2.5, 0.6, 1.1)
    a = np.zeros((14, 20, 18), dtype=bool)
    b = np.zeros_like(a)
    a[3:10, 4:15, 3:12] = True
    b[4:12, 6:18, 2:10] = True
    a &= rng.random(a.shape) > 0.1  # holes make inner surfaces too
    b[0, 0, 0] = True  # touches the image border: border voxels are surface
    pred_to_truth, truth_to_pred = surface_distances(a, b, spacing)

    from scipy import ndimage
    def surface_points(mask):
        eroded = ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(3, 1), border_value=0)
        return np.argwhere(mask & ~eroded) * np.array(spacing)

    pa, pb = surface_points(a), surface_points(b)
    np.testing.assert_allclose(pred_to_truth, cKDTree(pb).query(pa)[0], atol=1e-9)
    np.testing.assert_allclose(truth_to_pred, cKDTree(pa).query(pb)[0], atol=1e-9)
    expected_hd95 = max(np.percentile(pred_to_truth, 95), np.percentile(truth_to_pred, 95))
    assert hd95(a, b, spacing) == pytest.approx(expected_hd95)
    assert assd(a, b, spacing) == pytest.approx(np.concatenate([pred_to_truth, truth_to_pred]).mean())


def test_hd95_and_assd_agree_with_monai():
    monai_metrics = pytest.importorskip("monai.metrics")
    import torch

    spacing = (2.0, 0.7, 1.2)
    rng = np.random.default_rng(7)
    a = box((20, 24, 22), (4, 4, 4), (14, 18, 16)) & (rng.random((20, 24, 22)) > 0.05)
    b = box((20, 24, 22), (5, 6, 3), (16, 19, 15))
    as_tensor = lambda m: torch.from_numpy(m[None, None].astype(np.float32))  # noqa: E731
    monai_hd95 = monai_metrics.compute_hausdorff_distance(
        as_tensor(a), as_tensor(b), percentile=95, spacing=spacing
    ).item()
    monai_assd = monai_metrics.compute_average_surface_distance(
        as_tensor(a), as_tensor(b), symmetric=True, spacing=spacing
    ).item()
    assert hd95(a, b, spacing) == pytest.approx(monai_hd95, rel=1e-5)
    assert assd(a, b, spacing) == pytest.approx(monai_assd, rel=1e-5)


# --- centroids ----------------------------------------------------------------

def test_centroid_is_physical_with_spacing_origin_and_direction():
    mask = box((10, 10, 10), (2, 4, 6), (5, 5, 9))  # centre index (z, y, x) = (3, 4, 7)
    image = label_image(
        mask, spacing=(0.5, 2.0, 3.0), origin=(10.0, 20.0, 30.0),
        direction=(-1, 0, 0, 0, 1, 0, 0, 0, -1),
    )
    expected = (10.0 - 7 * 0.5, 20.0 + 4 * 2.0, 30.0 - 3 * 3.0)
    np.testing.assert_allclose(centroid_mm(mask, image), expected)
    with pytest.raises(ValueError, match="empty"):
        centroid_mm(np.zeros_like(mask), image)


# --- per-level metrics --------------------------------------------------------

def spine(shape=(100, 20, 20)) -> np.ndarray:
    """Truth with T12, L1, L2 as 10-voxel blocks along z (S = +z), 5 voxel gaps."""
    truth = np.zeros(shape, dtype=np.uint8)
    truth[70:80, 5:15, 5:15] = T12
    truth[55:65, 5:15, 5:15] = L1
    truth[40:50, 5:15, 5:15] = L2
    return truth


def test_perfect_prediction_on_truth_levels_only():
    truth = label_image(spine(), spacing=(1.0, 0.8, 0.8))
    result = per_level_metrics(truth, truth)
    assert list(result["levels"]) == ["L1", "L2"]  # T12 is not an evaluated level
    for level in result["levels"].values():
        assert level == {
            "dice": 1.0, "hd95": 0.0, "assd": 0.0, "centroid_distance": 0.0,
            "predicted": True, "identified": True,
        }
    assert result["false_positives"] == [] and result["outside_labelled_range"] == []


@pytest.mark.parametrize("shift_voxels, identified", [(38, True), (42, False)])
def test_identification_needs_centroid_within_20_mm(shift_voxels, identified):
    # x spacing 0.5 mm: 38 voxels = 19 mm, 42 voxels = 21 mm (voxel counts would say otherwise).
    truth_array = np.zeros((30, 20, 120), dtype=np.uint8)
    truth_array[10:20, 5:15, 10:30] = L1
    pred_array = np.roll(truth_array, shift_voxels, axis=2)
    spacing = (0.5, 1.0, 2.0)  # SimpleITK order (x, y, z)
    result = per_level_metrics(label_image(pred_array, spacing=spacing), label_image(truth_array, spacing=spacing))
    level = result["levels"]["L1"]
    assert level["centroid_distance"] == pytest.approx(shift_voxels * 0.5)
    assert level["identified"] is identified
    assert level["dice"] == 0.0 and level["predicted"] is True


def test_identification_fails_when_another_truth_vertebra_is_closer():
    # Predicted L1 centroid 13 mm below the true L1 but only 2 mm from the true L2.
    truth = spine()
    pred = np.zeros_like(truth)
    pred[42:52, 5:15, 5:15] = L1
    result = per_level_metrics(label_image(pred), label_image(truth))
    assert result["levels"]["L1"]["centroid_distance"] == pytest.approx(13.0)
    assert result["levels"]["L1"]["identified"] is False


def test_level_missing_in_prediction():
    truth = spine()
    pred = np.where(truth == L2, 0, truth)
    result = per_level_metrics(label_image(pred), label_image(truth))
    assert result["levels"]["L2"] == {
        "dice": 0.0, "hd95": math.inf, "assd": math.inf, "centroid_distance": None,
        "predicted": False, "identified": False,
    }
    assert result["levels"]["L1"]["identified"] is True


def test_swapped_labels_are_not_identified():
    truth = spine()
    pred = truth.copy()
    pred[truth == L1], pred[truth == L2] = L2, L1
    result = per_level_metrics(label_image(pred), label_image(truth))
    for name in ("L1", "L2"):
        assert result["levels"][name]["dice"] == 0.0
        assert result["levels"][name]["centroid_distance"] == pytest.approx(15.0)
        assert result["levels"][name]["identified"] is False


def test_prediction_caudal_to_the_partial_truth_is_not_a_false_positive():
    # Truth labels T12..L2 only (z 40..79); the scan continues caudally.
    truth = spine()
    pred = truth.copy()
    pred[25:35, 5:15, 5:15] = L3  # the real L3, below the labelled range
    pred[5:15, 5:15, 5:15] = L4
    result = per_level_metrics(label_image(pred), label_image(truth))
    assert result["false_positives"] == []
    assert result["outside_labelled_range"] == ["L3", "L4"]
    assert list(result["levels"]) == ["L1", "L2"]


def test_prediction_inside_the_labelled_range_is_a_false_positive():
    # L6 predicted where the truth says L1 (the labelled range): an error.
    truth = spine()
    pred = truth.copy()
    pred[truth == L1] = L6
    result = per_level_metrics(label_image(pred), label_image(truth))
    assert result["false_positives"] == ["L6"]
    assert result["outside_labelled_range"] == []
    assert result["levels"]["L1"]["predicted"] is False


def test_labelled_range_uses_the_physical_superior_axis():
    # Sagittal acquisition: array axis 2 (index x) runs along physical S, so the
    # labels lie along x.  Judged on index z, every block would be "inside".
    sagittal = (0, 0, 1, 0, 1, 0, 1, 0, 0)
    truth = np.transpose(spine(), (2, 1, 0))
    pred = truth.copy()
    pred[5:15, 5:15, 66:69] = L3  # between T12 and L1: inside the labelled range
    pred[5:15, 5:15, 2:8] = L4  # caudal to it
    result = per_level_metrics(label_image(pred, direction=sagittal), label_image(truth, direction=sagittal))
    assert result["false_positives"] == ["L3"]
    assert result["outside_labelled_range"] == ["L4"]


def test_prediction_on_a_different_grid_is_resampled():
    truth_array = spine((100, 20, 20))
    truth = label_image(truth_array)
    # The same labels on a 2x finer in-plane grid with a larger field of view:
    # fine voxels 2j+3, 2j+4 (centres j - 0.3, j + 0.2 mm) carry truth voxel j.
    fine = np.repeat(np.repeat(truth_array, 2, axis=1), 2, axis=2)
    fine = np.pad(fine, ((0, 0), (3, 3), (3, 3)))
    pred = label_image(fine, spacing=(0.5, 0.5, 1.0), origin=(-1.8, -1.8, 0.0))
    result = per_level_metrics(pred, truth)
    assert result["levels"]["L1"]["dice"] == 1.0
    assert result["levels"]["L2"]["hd95"] == 0.0


def test_float32_rounded_spacing_counts_as_the_same_grid():
    truth = label_image(spine(), spacing=(1.0, 1.0, 3.0))
    pred = label_image(spine(), spacing=(1.0, 1.0, 3.000000238418579))
    assert per_level_metrics(pred, truth)["levels"]["L1"]["dice"] == 1.0


def test_prediction_elsewhere_in_space_is_an_error():
    truth = label_image(spine())
    pred = label_image(spine(), origin=(500.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="do not overlap"):
        per_level_metrics(pred, truth)


def test_per_level_distances_use_the_image_spacing_in_physical_order():
    # One-voxel L1 plates 2 slices apart, slice spacing 3 mm, in-plane 0.8 mm.
    truth_array = np.zeros((20, 12, 12), dtype=np.uint8)
    truth_array[8, 2:10, 2:10] = L1
    pred_array = np.roll(truth_array, 2, axis=0)
    spacing = (0.8, 0.8, 3.0)
    result = per_level_metrics(label_image(pred_array, spacing=spacing), label_image(truth_array, spacing=spacing))
    level = result["levels"]["L1"]
    assert level["hd95"] == pytest.approx(6.0)
    assert level["assd"] == pytest.approx(6.0)
    assert level["centroid_distance"] == pytest.approx(6.0)
