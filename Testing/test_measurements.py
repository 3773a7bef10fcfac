"""Per-vertebra measurements against analytic ground truth on axis-aligned, oblique, flipped grids."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from LumbarSegLib.measurements import vertebra_measurements

OBLIQUE = Rotation.from_euler("zyx", [25, -10, 15], degrees=True).as_matrix()
GRIDS = {
    "isotropic": (np.eye(3), (1.0, 1.0, 1.0)),
    "oblique_anisotropic": (OBLIQUE, (0.7, 0.9, 2.5)),
    "flipped_anisotropic": (np.diag([-1.0, 1.0, 1.0]), (0.8, 0.6, 3.0)),
    "oblique_flipped": (OBLIQUE @ np.diag([1.0, 1.0, -1.0]), (1.2, 0.6, 1.5)),
}
CENTRE_LPS = np.array([3.0, -20.0, -150.0])
RAS = np.array([-1.0, -1.0, 1.0])


def grid(direction: np.ndarray, spacing, extent_mm: float = 130.0) -> tuple[sitk.Image, np.ndarray]:
    """An empty uint8 image whose physical box covers CENTRE_LPS +- extent_mm/2, and its voxel centres (LPS)."""
    size = [int(np.ceil(extent_mm / s)) for s in spacing]
    image = sitk.Image(size, sitk.sitkUInt8)
    image.SetSpacing(spacing)
    image.SetDirection(direction.ravel().tolist())
    index_to_lps = direction @ np.diag(spacing)
    image.SetOrigin((CENTRE_LPS - index_to_lps @ ((np.array(size) - 1) / 2.0)).tolist())
    k, j, i = np.meshgrid(*[np.arange(n) for n in size[::-1]], indexing="ij")
    lps = np.stack([i, j, k], axis=-1) @ index_to_lps.T + np.array(image.GetOrigin())
    return image, lps


def from_array(kji: np.ndarray, like: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(kji)
    image.CopyInformation(like)
    return image


@pytest.mark.parametrize("name", GRIDS)
def test_ellipsoid_volume_centroid_bbox(name):
    direction, spacing = GRIDS[name]
    empty, lps = grid(direction, spacing)
    semi_axes = np.array([18.0, 14.0, 10.0])
    inside = (((lps - CENTRE_LPS) / semi_axes) ** 2).sum(axis=-1) <= 1.0
    labels = from_array(np.where(inside, 22, 0).astype(np.uint8), empty)
    ct = from_array(np.zeros(inside.shape, np.int16), empty)

    result = vertebra_measurements(ct, labels)
    assert list(result) == ["L3"]
    m = result["L3"]
    assert m["voxel_count"] == inside.sum()
    analytic_ml = 4.0 / 3.0 * np.pi * semi_axes.prod() / 1000.0
    assert m["volume_ml"] == pytest.approx(analytic_ml, rel=0.03)
    assert np.allclose(m["centroid_ras_mm"], lps[inside].mean(axis=0) * RAS, atol=1e-6)
    assert np.allclose(m["centroid_ras_mm"], CENTRE_LPS * RAS, atol=0.3)
    centre_ras = CENTRE_LPS * RAS
    voxel_diagonal = float(np.linalg.norm(spacing))
    assert np.allclose(m["bbox_ras_mm"]["min"], centre_ras - semi_axes, atol=voxel_diagonal)
    assert np.allclose(m["bbox_ras_mm"]["max"], centre_ras + semi_axes, atol=voxel_diagonal)
    assert m["touches_fov_border"] is False
    assert m["components"] == 1


def test_box_bbox_exact_on_flipped_grid():
    kji = np.zeros((20, 30, 40), np.uint8)
    kji[3:8, 10:20, 5:15] = 20  # i 5..14, j 10..19, k 3..7
    labels = sitk.GetImageFromArray(kji)
    labels.SetSpacing((0.8, 0.5, 2.0))
    labels.SetOrigin((10.0, -30.0, 100.0))
    labels.SetDirection(np.diag([-1.0, 1.0, -1.0]).ravel().tolist())  # x and z flipped (det = +1 here)
    ct = sitk.Cast(labels, sitk.sitkInt16)

    m = vertebra_measurements(ct, labels)["L1"]
    # LPS voxel edges: x 10 - 0.8 * [4.5, 14.5], y -30 + 0.5 * [9.5, 19.5], z 100 - 2 * [2.5, 7.5]
    lps_min = np.array([10 - 0.8 * 14.5, -30 + 0.5 * 9.5, 100 - 2 * 7.5])
    lps_max = np.array([10 - 0.8 * 4.5, -30 + 0.5 * 19.5, 100 - 2 * 2.5])
    assert np.allclose(m["bbox_ras_mm"]["min"], [-lps_max[0], -lps_max[1], lps_min[2]])
    assert np.allclose(m["bbox_ras_mm"]["max"], [-lps_min[0], -lps_min[1], lps_max[2]])
    assert np.allclose(m["centroid_ras_mm"], [-(10 - 0.8 * 9.5), -(-30 + 0.5 * 14.5), 100 - 2 * 5])
    assert m["voxel_count"] == 500
    assert m["volume_ml"] == pytest.approx(500 * 0.8 * 0.5 * 2.0 / 1000.0)


@pytest.mark.parametrize("name", GRIDS)
def test_cancellous_core_excludes_shell_and_posterior_elements(name):
    direction, spacing = GRIDS[name]
    empty, lps = grid(direction, spacing)
    d = lps - CENTRE_LPS  # LPS: +y is posterior
    body = (np.abs(d[..., 0]) <= 20) & (np.abs(d[..., 1]) <= 15) & (np.abs(d[..., 2]) <= 12)
    posterior = (np.abs(d[..., 0]) <= 7) & (d[..., 1] > 15) & (d[..., 1] <= 45) & (np.abs(d[..., 2]) <= 7)
    distance_to_face = np.min([20 - np.abs(d[..., 0]), 15 - np.abs(d[..., 1]), 12 - np.abs(d[..., 2])], axis=0)
    shell = body & (distance_to_face < 2.0)

    labels = from_array(np.where(body | posterior, 24, 0).astype(np.uint8), empty)
    hu = np.full(body.shape, -50, np.int16)
    hu[body] = 150
    hu[shell] = 1100
    hu[posterior] = 600
    ct = from_array(hu, empty)

    m = vertebra_measurements(ct, labels)["L5"]
    assert m["cancellous_hu_mean"] == 150.0
    assert m["cancellous_hu_std"] == 0.0
    # The core is (within voxelisation) |x| <= 16, |z| <= 8 and y from -11 to the anterior 30 %
    # of the 60 mm extent (y <= 3): 32 x 14 x 16 mm.
    core_mm3 = m["core_voxel_count"] * float(np.prod(spacing))
    assert 0.4 * 32 * 14 * 16 < core_mm3 < 1.1 * 32 * 14 * 16
    assert m["components"] == 1


def test_core_empty_for_thin_structure():
    kji = np.zeros((10, 20, 20), np.uint8)
    kji[4:6, 5:15, 5:15] = 21  # 2 mm thick plate
    labels = sitk.GetImageFromArray(kji)
    m = vertebra_measurements(sitk.Cast(labels, sitk.sitkFloat32), labels)["L2"]
    assert m["core_voxel_count"] == 0
    assert m["cancellous_hu_mean"] is None and m["cancellous_hu_std"] is None


def test_touches_border_components_and_levels():
    kji = np.zeros((30, 40, 50), np.uint8)
    kji[10:15, 10:20, 10:20] = 20          # interior
    kji[0:3, 25:30, 10:20] = 21            # on the k = 0 face
    kji[20:25, 30:35, 45:50] = 22          # on the i = size - 1 face
    kji[20:24, 5:9, 5:9] = 23              # two 26-connected blocks touching at a corner ...
    kji[24:28, 9:13, 9:13] = 23
    kji[20:24, 20:24, 30:34] = 25          # L6: two separate pieces
    kji[26:29, 20:24, 30:34] = 25
    kji[5:8, 5:8, 30:33] = 26              # sacrum is not measured
    labels = sitk.GetImageFromArray(kji)
    labels.SetDirection(OBLIQUE.ravel().tolist())
    result = vertebra_measurements(sitk.Cast(labels, sitk.sitkInt16), labels)

    assert list(result) == ["L1", "L2", "L3", "L4", "L6"]
    assert [result[n]["touches_fov_border"] for n in result] == [False, True, True, False, False]
    assert [result[n]["components"] for n in result] == [1, 1, 1, 1, 2]


def test_grid_mismatch_is_rejected():
    labels = sitk.Image([10, 10, 10], sitk.sitkUInt8)
    ct = sitk.Image([10, 10, 10], sitk.sitkInt16)
    ct.SetSpacing((1.0, 1.0, 2.0))
    with pytest.raises(ValueError):
        vertebra_measurements(ct, labels)
