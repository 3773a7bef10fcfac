"""Geometry: canonical grids, resampling, and restoring results onto the exact input grid."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from LumbarSegLib import geometry
from LumbarSegLib.labels import lookup_table

GRIDS = {
    "axial": dict(spacing=(0.8, 0.8, 1.0), direction=np.eye(3)),
    "flipped": dict(spacing=(0.8, 0.8, 1.0), direction=np.diag([-1.0, -1.0, 1.0])),
    "sagittal_anisotropic": dict(spacing=(3.0, 0.7, 0.9), direction=np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0.0]])),
    "oblique": dict(spacing=(1.1, 0.9, 1.6), direction=Rotation.from_euler("xyz", [12, -8, 20], degrees=True).as_matrix()),
}


def sphere_image(*, spacing, direction, center=(5.0, -3.0, 12.0), radius=14.0, size=(64, 64, 48)):
    """Label 1 inside a physical sphere, on a grid centred on it; exact truth from physical coordinates."""
    image = sitk.Image(list(size), sitk.sitkUInt8)
    image.SetSpacing(spacing)
    image.SetDirection(direction.ravel().tolist())
    half = direction @ ((np.array(size) - 1) / 2 * np.array(spacing))
    image.SetOrigin((np.array(center) - half).tolist())
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij"), -1).reshape(-1, 3)
    points = np.array(image.GetOrigin()) + (idx * np.array(spacing)) @ direction.T
    inside = np.linalg.norm(points - np.array(center), axis=1) <= radius
    array = inside.reshape(size).transpose(2, 1, 0).astype(np.uint8)
    labels = sitk.GetImageFromArray(array)
    labels.CopyInformation(image)
    return labels


def test_physical_box_of_flipped_image_is_ordered():
    image = sphere_image(**GRIDS["flipped"])
    box = geometry.physical_box(image)
    assert np.all(box.upper > box.lower)
    np.testing.assert_allclose(box.size, (np.array(image.GetSize()) - 1) * np.array(image.GetSpacing()))


def test_canonical_reference_covers_box_with_multiple_sizes():
    box = geometry.Box(np.array([-10.0, 5.0, 100.0]), np.array([33.0, 47.0, 161.0]))
    reference = geometry.canonical_reference(box, 2.5, multiple_of=8)
    assert all(n % 8 == 0 for n in reference.GetSize())
    covered = geometry.physical_box(reference)
    assert np.all(covered.lower <= box.lower) and np.all(covered.upper >= box.upper)
    assert reference.GetDirection() == (1, 0, 0, 0, 1, 0, 0, 0, 1)
    np.testing.assert_allclose(covered.center, box.center, atol=1e-6)


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_restore_lies_on_exact_input_grid_and_matches_truth(name):
    truth = sphere_image(**GRIDS[name])
    reference = geometry.canonical_reference(geometry.physical_box(truth).expanded(5.0), 1.5, multiple_of=8)
    canonical = sitk.GetArrayFromImage(geometry.resample_labels(truth, reference))
    probabilities = np.stack([canonical == 0, canonical == 1]).astype(np.float32)
    restored = geometry.restore_labels(probabilities, reference, truth)
    assert restored.shape == sitk.GetArrayViewFromImage(truth).shape
    expected = sitk.GetArrayViewFromImage(truth).astype(bool)
    got = restored.astype(bool)
    dice = 2 * (expected & got).sum() / (expected.sum() + got.sum())
    assert dice > 0.95, dice


CROP = geometry.Box(np.array([-30.0, -40.0, 0.0]), np.array([0.0, -10.0, 20.0]))


def crop_filled_with_one_class() -> tuple[np.ndarray, sitk.Image]:
    """Probabilities of class 1 over the whole crop ``CROP`` at 2 mm, and the crop's grid."""
    reference = geometry.canonical_reference(CROP, 2.0)
    probabilities = np.zeros((2,) + reference.GetSize()[::-1], dtype=np.float32)
    probabilities[1] = 1.0
    return probabilities, reference


def test_restore_outside_crop_is_background():
    truth = sphere_image(**GRIDS["oblique"])
    restored = geometry.restore_labels(*crop_filled_with_one_class(), truth)
    array = sitk.GetArrayViewFromImage(truth)
    idx = np.argwhere(restored == 1)
    assert 0 < len(idx) < array.size
    for k, j, i in idx[:: max(1, len(idx) // 50)]:
        point = np.array(truth.TransformIndexToPhysicalPoint([int(i), int(j), int(k)]))
        assert np.all(point >= CROP.lower - 1.5) and np.all(point <= CROP.upper + 1.5)


def test_restore_refines_a_region_one_voxel_beyond_labels_that_fill_the_crop():
    target = sphere_image(**GRIDS["oblique"])
    regions = []
    restored = geometry.restore_labels(*crop_filled_with_one_class(), target,
                                       refine=lambda classes, where: regions.append(where) or classes)
    (where,) = regions
    labelled = np.argwhere(restored)
    assert 0 < len(labelled) < restored.size
    for axis, part in enumerate(where):
        assert part.start <= max(labelled[:, axis].min() - 1, 0)
        assert part.stop >= min(labelled[:, axis].max() + 2, restored.shape[axis])


def test_resample_image_of_constant_is_constant_with_air_outside():
    image = sitk.Image([40, 40, 30], sitk.sitkInt16) + 55
    image.SetSpacing((0.7, 0.7, 1.2))
    image.SetDirection(GRIDS["sagittal_anisotropic"]["direction"].ravel().tolist())
    inside = geometry.canonical_reference(geometry.physical_box(image).expanded(-8.0), 3.0)
    out = sitk.GetArrayFromImage(geometry.resample_image(image, inside))
    np.testing.assert_allclose(out, 55.0, atol=1e-3)
    far = geometry.canonical_reference(geometry.Box(np.full(3, 500.0), np.full(3, 520.0)), 3.0)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(geometry.resample_image(image, far)), -1000.0)


def test_downsampling_averages_like_a_coarse_acquisition():
    rng = np.random.default_rng(0)
    noise = sitk.GetImageFromArray(rng.normal(0, 100, (80, 96, 96)).astype(np.float32))
    noise.SetSpacing((0.5, 0.5, 0.5))
    reference = geometry.canonical_reference(geometry.physical_box(noise).expanded(-6.0), 6.0)
    smooth = sitk.GetArrayFromImage(geometry.resample_image(noise, reference))
    crude = sitk.GetArrayFromImage(geometry.resample_image(noise, reference, antialias=False))
    assert smooth.std() < 0.2 * crude.std()


def test_integer_scan_is_binned_in_its_own_type_within_half_a_unit_of_float():
    rng = np.random.default_rng(1)
    values = rng.integers(-1000, 1500, (40, 48, 48)).astype(np.int16)
    images = [sitk.GetImageFromArray(values), sitk.GetImageFromArray(values.astype(np.float32))]
    for image in images:
        image.SetSpacing([0.8, 0.8, 1.0])
    reference = geometry.canonical_reference(geometry.physical_box(images[0]), 6.0, multiple_of=8)
    from_int, from_float = (sitk.GetArrayFromImage(geometry.resample_image(i, reference)) for i in images)
    assert np.abs(from_int - from_float).max() <= 0.5 + 1e-3


@pytest.mark.parametrize("seed", range(12))
def test_random_orientation_round_trip(seed):
    """Random rotation, axis permutation and flips, anisotropic spacing: exact grid, agreeing truth."""
    rng = np.random.default_rng(seed)
    permutation = np.eye(3)[rng.permutation(3)] * rng.choice([-1.0, 1.0], 3)[:, None]
    rotation = Rotation.from_euler("xyz", rng.uniform(-25, 25, 3), degrees=True).as_matrix()
    direction = rotation @ permutation
    spacing = tuple(float(s) for s in rng.uniform(0.6, 3.5, 3))
    size = tuple(int(np.ceil(90 / s)) for s in spacing)
    truth = sphere_image(spacing=spacing, direction=direction, center=tuple(rng.uniform(-50, 50, 3)),
                         radius=22.0, size=size)
    reference = geometry.canonical_reference(geometry.physical_box(truth), 2.5, multiple_of=8)
    canonical = sitk.GetArrayFromImage(geometry.resample_labels(truth, reference))
    probabilities = np.stack([canonical == 0, canonical == 1]).astype(np.float32)
    restored = geometry.restore_labels(probabilities, reference, truth)
    expected = sitk.GetArrayViewFromImage(truth).astype(bool)
    assert restored.shape == expected.shape
    got = restored.astype(bool)
    assert 2 * (expected & got).sum() / (expected.sum() + got.sum()) > 0.9


def test_restore_equals_argmax_of_every_class_resampled_everywhere():
    """Resampling each class only where it can win is exact, also on a flipped, anisotropic target."""
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1, (4, 12, 10, 14)).astype(np.float32)
    logits[1, 2:6, 3:7, 2:8] += 4
    logits[2, 6:10, 2:8, 5:12] += 4
    logits[3, 9:11, 1:3, 1:4] += 3
    # Background on the outer face: the result outside the crop's voxel centres is background by definition,
    # while plain resampling extrapolates half a voxel further.
    for axis in range(3):
        face = [slice(None)] * 3
        for index in (0, -1):
            face[axis] = index
            logits[(0, *face)] += 12
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=0)
    canonical = geometry.canonical_reference(geometry.Box(np.array([-10.0, -5.0, 3.0]),
                                                          np.array([22.5, 17.5, 30.5])), 2.5)
    assert canonical.GetSize() == (14, 10, 12)
    target = sitk.Image([40, 33, 21], sitk.sitkInt16)
    target.SetSpacing([0.9, 0.8, 1.7])
    target.SetDirection([1, 0, 0, 0, -1, 0, 0, 0, 1])
    target.SetOrigin([-12.0, 20.0, 1.0])
    resampled = np.stack([
        sitk.GetArrayFromImage(sitk.Resample(geometry.array_to_image(probabilities[c], canonical), target,
                                             sitk.Transform(), sitk.sitkLinear, 1.0 if c == 0 else 0.0,
                                             sitk.sitkFloat32))
        for c in range(4)
    ])
    expected = resampled.argmax(axis=0)
    restored = geometry.restore_labels(probabilities, canonical, target)
    assert len(np.unique(expected)) >= 3
    np.testing.assert_array_equal(restored, expected)
    values = lookup_table({1: 20, 2: 21, 3: 22})
    np.testing.assert_array_equal(geometry.restore_labels(probabilities, canonical, target, values=values),
                                  values[expected])

    def refine(classes: np.ndarray, where: tuple[slice, slice, slice]) -> np.ndarray:
        """Check the region against the full grid, then relabel class 3 as class 1."""
        np.testing.assert_array_equal(classes, expected[where])
        return np.where(classes == 3, 1, classes).astype(np.uint8)

    np.testing.assert_array_equal(geometry.restore_labels(probabilities, canonical, target, values=values,
                                                          refine=refine),
                                  values[np.where(expected == 3, 1, expected)])


def test_covered_by_agrees_with_simpleitk_nearest_resampling_of_an_oblique_scan():
    scan = sitk.Image([10, 20, 30], sitk.sitkUInt8) + 1
    scan.SetSpacing([1.3, 2.0, 3.0])
    scan.SetOrigin([5.0, -3.0, 0.0])
    scan.SetDirection(Rotation.from_euler("xyz", [0.3, -0.2, 0.5]).as_matrix().ravel().tolist())
    crop = sitk.Image([40, 40, 40], sitk.sitkUInt8)
    crop.SetSpacing([2.0] * 3)
    crop.SetOrigin([-30.0, -30.0, -10.0])
    inside = sitk.GetArrayFromImage(sitk.Resample(scan, crop, sitk.Transform(), sitk.sitkNearestNeighbor, 0))
    covered = geometry.covered_by(crop, scan)
    assert covered.any() and not covered.all()
    np.testing.assert_array_equal(covered, inside.astype(bool))
