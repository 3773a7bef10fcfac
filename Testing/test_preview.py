"""Preview PNG: valid image, radiological orientation, undistorted views of oblique anisotropic input."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from matplotlib.image import imread
from scipy.spatial.transform import Rotation

from LumbarSegLib import preview
from LumbarSegLib.preview import write_preview

OBLIQUE = Rotation.from_euler("zyx", [20, -8, 12], degrees=True).as_matrix()
LEVEL_Z = {20: 80.0, 21: 45.0, 22: 10.0, 23: -25.0, 24: -60.0}  # LPS z of each level, L1 on top


def grid(direction: np.ndarray, spacing, extent_mm=(170.0, 170.0, 230.0)) -> tuple[sitk.Image, np.ndarray]:
    """Empty image centred on the LPS origin and its voxel centres in LPS."""
    size = [int(np.ceil(e / s)) for e, s in zip(extent_mm, spacing)]
    image = sitk.Image(size, sitk.sitkUInt8)
    image.SetSpacing(spacing)
    image.SetDirection(direction.ravel().tolist())
    index_to_lps = direction @ np.diag(spacing)
    image.SetOrigin((-index_to_lps @ ((np.array(size) - 1) / 2.0)).tolist())
    k, j, i = np.meshgrid(*[np.arange(n) for n in size[::-1]], indexing="ij")
    return image, np.stack([i, j, k], axis=-1) @ index_to_lps.T + np.array(image.GetOrigin())


def phantom(direction: np.ndarray, spacing) -> tuple[sitk.Image, sitk.Image]:
    """Trunk with five vertebrae (body anterior, posterior element behind) and a rod at the patient's
    left-anterior side; LPS: +x left, +y posterior, +z superior."""
    empty, lps = grid(direction, spacing)
    x, y, z = lps[..., 0], lps[..., 1], lps[..., 2]
    hu = np.where((x / 75) ** 2 + (y / 65) ** 2 <= 1, 40, -1000).astype(np.int16)
    kji = np.zeros(hu.shape, np.uint8)
    for value, level_z in LEVEL_Z.items():
        body = (np.abs(x) <= 22) & (y >= -25) & (y <= 5) & (np.abs(z - level_z) <= 13)
        arch = (np.abs(x) <= 6) & (y > 5) & (y <= 40) & (np.abs(z - level_z) <= 8)
        kji[body | arch] = value
        hu[body] = 250
        hu[arch] = 600
    hu[(np.hypot(x - 50, y + 30) <= 5)] = 1500
    ct, labels = sitk.GetImageFromArray(hu), sitk.GetImageFromArray(kji)
    ct.CopyInformation(empty)
    labels.CopyInformation(empty)
    return ct, labels


def test_writes_png(tmp_path):
    ct, labels = phantom(OBLIQUE, (1.4, 1.1, 3.0))
    path = tmp_path / "preview.tmp"  # the caller renames it; the format must not depend on the name
    write_preview(ct, labels, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path, format="png")
    assert 400 <= image.shape[0] <= 1000 and 800 <= image.shape[1] <= 3000
    assert image[..., :3].std() > 0.05  # not blank


def test_empty_labels_still_previews(tmp_path):
    ct, labels = phantom(np.eye(3), (2.0, 2.0, 4.0))
    write_preview(ct, labels * 0, tmp_path / "empty.png")
    assert imread(tmp_path / "empty.png").shape[0] >= 400


def views(ct: sitk.Image, labels: sitk.Image) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    values, centre, low, high = preview._region(labels)
    return {title: preview._slice_pair(ct, labels, centre, low, high, 1.0, cols, rows, normal)
            for title, cols, rows, normal, _ in preview.VIEWS}


def mean_position(mask: np.ndarray) -> np.ndarray:
    return np.argwhere(mask).mean(axis=0)  # (row, column)


@pytest.mark.parametrize("direction", [OBLIQUE, np.diag([-1.0, 1.0, 1.0]), np.diag([-1.0, -1.0, 1.0])],
                         ids=["oblique", "flipped", "ras_stored"])
def test_radiological_orientation(direction):
    shown = views(*phantom(direction, (1.4, 1.1, 3.0)))
    hu, lab = shown["Axial"]
    rod = mean_position(hu > 1000)
    spine = mean_position(lab > 0)
    assert rod[1] > hu.shape[1] / 2 + 20  # patient left on the image right
    assert rod[0] < spine[0] - 10          # anterior up
    hu, lab = shown["Coronal"]
    assert mean_position(lab == 20)[0] < mean_position(lab == 24)[0] - 100  # L1 above L5
    hu, lab = shown["Sagittal"]
    assert mean_position(lab == 20)[0] < mean_position(lab == 24)[0] - 100  # L1 above L5
    body = mean_position((lab == 22) & (np.abs(hu - 250) < 50))
    arch = mean_position((lab == 22) & (np.abs(hu - 600) < 50))
    assert body[1] < arch[1] - 20  # anterior on the left


def test_views_are_undistorted_on_oblique_anisotropic_grid():
    empty, lps = grid(OBLIQUE, (0.8, 1.3, 3.5), extent_mm=(120.0, 120.0, 120.0))
    sphere = np.linalg.norm(lps - np.array([5.0, -3.0, 2.0]), axis=-1) <= 30.0
    labels = sitk.GetImageFromArray(np.where(sphere, 22, 0).astype(np.uint8))
    labels.CopyInformation(empty)
    ct = sitk.Cast(labels, sitk.sitkInt16)
    for title, (_, lab) in views(ct, labels).items():
        disc = np.argwhere(lab == 22)
        height, width = np.ptp(disc, axis=0) + 1
        assert abs(height - width) <= 4, title   # a circle, not an ellipse (3.5 mm slices)
        assert 54 <= height <= 62, title         # 60 mm at 1 mm pixels
        assert disc.shape[0] == pytest.approx(np.pi * 30.0**2, rel=0.06), title
