"""Tests of the spatial and intensity augmentation (LumbarSegLib.training.augment)."""

from __future__ import annotations

import numpy as np
from LumbarSegLib.training.augment import (
    AIR_HU,
    SpatialParams,
    apply_spatial,
    random_intensity,
    _low_resolution,
    random_spatial,
    sample_center,
    spatial_matrix,
)

SHAPE = (41, 41, 41)
CENTER = np.array([20.0, 20.0, 20.0])


def _cube(center: tuple[int, int, int], half: int = 2, shape=SHAPE, value: int = 7) -> np.ndarray:
    labels = np.zeros(shape, np.uint8)
    z, y, x = center
    labels[z - half:z + half + 1, y - half:y + half + 1, x - half:x + half + 1] = value
    return labels


def _centroid(mask: np.ndarray) -> np.ndarray:
    return np.argwhere(mask).mean(axis=0)


def _random_sample(seed: int = 0, shape=SHAPE):
    rng = np.random.default_rng(seed)
    image = rng.normal(0.0, 300.0, shape).astype(np.float32)
    labels = rng.integers(0, 5, shape).astype(np.uint8) * 5
    valid = rng.random(shape) > 0.2
    return image, labels, valid


def test_random_spatial_is_deterministic_for_a_seed():
    image, labels, valid = _random_sample()
    first = random_spatial(image, labels, valid, np.random.default_rng(3), spacing_mm=2.0, flip_lr=True)
    second = random_spatial(image, labels, valid, np.random.default_rng(3), spacing_mm=2.0, flip_lr=True)
    other = random_spatial(image, labels, valid, np.random.default_rng(4), spacing_mm=2.0, flip_lr=True)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


def test_identity_parameters_reproduce_the_input():
    image, labels, valid = _random_sample()
    out_image, out_labels, out_valid = random_spatial(
        image, labels, valid, np.random.default_rng(0), spacing_mm=2.0, rotation_deg=(0, 0, 0),
        scale=(1.0, 1.0), anisotropic_scale=0.0, elastic_mm=0.0)
    np.testing.assert_array_equal(out_labels, labels)
    np.testing.assert_array_equal(out_valid, valid)
    np.testing.assert_allclose(out_image, image, atol=0.1)
    assert out_image.dtype == np.float32 and out_labels.dtype == np.uint8


def test_rotation_of_90_degrees_about_z_turns_posterior_into_left():
    labels = _cube((20, 30, 20))  # +10 voxels along y from the centre
    params = SpatialParams(spatial_matrix(rotation_deg=(90, 0, 0)))
    _, out, _ = apply_spatial(None, labels, None, params, spacing_mm=2.0)
    np.testing.assert_allclose(_centroid(out == 7), CENTER + [0, 0, 10], atol=1e-6)


def test_rotation_about_x_turns_superior_into_posterior():
    labels = _cube((28, 20, 20))
    params = SpatialParams(spatial_matrix(rotation_deg=(0, 0, 90)))
    _, out, _ = apply_spatial(None, labels, None, params, spacing_mm=2.0)
    np.testing.assert_allclose(_centroid(out == 7), CENTER + [0, 8, 0], atol=1e-6)


def test_scale_moves_the_centroid_away_from_the_centre():
    labels = _cube((20, 30, 20))
    params = SpatialParams(spatial_matrix(scale=(1.0, 1.5, 1.0)))
    _, out, _ = apply_spatial(None, labels, None, params, spacing_mm=2.0)
    np.testing.assert_allclose(_centroid(out == 7), CENTER + [0, 15, 0], atol=0.3)
    assert (out == 7).sum() > (labels == 7).sum() * 1.3


def test_flip_mirrors_x_only():
    labels = _cube((24, 18, 30))
    params = SpatialParams(spatial_matrix(flip_lr=True))
    _, out, _ = apply_spatial(None, labels, None, params, spacing_mm=2.0)
    np.testing.assert_array_equal(out, labels[:, :, ::-1])


def test_crop_around_center_vox_puts_that_voxel_at_the_patch_centre():
    labels = _cube((12, 30, 25))
    _, out, _ = apply_spatial(None, labels, None, SpatialParams(np.eye(3)), spacing_mm=2.0,
                              out_shape=(11, 11, 11), center_vox=(12, 30, 25))
    np.testing.assert_allclose(_centroid(out == 7), [5, 5, 5])
    assert (out == 7).sum() == (labels == 7).sum()


def test_labels_only_take_input_values():
    _, labels, valid = _random_sample()
    labels[labels == 10] = 0
    _, out, _ = random_spatial(None, labels, valid, np.random.default_rng(1), spacing_mm=2.0,
                               rotation_deg=(30, 30, 30), elastic_mm=6.0, flip_lr=True)
    assert set(np.unique(out)) <= set(np.unique(labels))


def test_outside_the_source_is_air_background_and_invalid():
    image, labels, valid = _random_sample()
    valid[:] = True
    out_image, out_labels, out_valid = apply_spatial(
        image, labels, valid, SpatialParams(np.eye(3)), spacing_mm=2.0, out_shape=(21, 21, 21),
        center_vox=(0, 40, 20))
    # Output voxel (i, j, k) reads source (i - 10, j + 30, k + 10): z < 10 and y > 10 are outside.
    inside = np.zeros((21, 21, 21), bool)
    inside[10:, :11, :] = True
    np.testing.assert_array_equal(out_valid, inside)
    assert np.all(out_image[~inside] == AIR_HU)
    assert np.all(out_labels[~inside] == 0)
    np.testing.assert_array_equal(out_labels[inside], labels[0:11, 30:41, 10:31].ravel())


def test_valid_mask_follows_labels_and_is_false_outside_after_random_transform():
    shape = (40, 40, 40)
    labels = np.zeros(shape, np.uint8)
    labels[:20] = 3
    valid = np.ones(shape, bool)
    valid[:20] = False  # the labels of the lower half are unknown
    image = np.full(shape, 100.0, np.float32)
    out_image, out_labels, out_valid = random_spatial(
        image, labels, valid, np.random.default_rng(5), spacing_mm=2.0, rotation_deg=(20, 20, 20),
        scale=(0.7, 0.7), out_shape=(60, 60, 60))
    assert not np.any(out_valid & (out_labels == 3))
    assert np.any(out_valid) and np.any(out_labels == 3)
    outside = out_image == AIR_HU
    assert outside.sum() > 1000 and not np.any(out_valid[outside]) and not np.any(out_labels[outside])


def test_patch_entirely_outside_the_source():
    image, labels, valid = _random_sample()
    out_image, out_labels, out_valid = apply_spatial(
        image, labels, valid, SpatialParams(np.eye(3)), spacing_mm=2.0, out_shape=(8, 8, 8),
        center_vox=(200, 0, 0))
    assert np.all(out_image == AIR_HU) and not out_labels.any() and not out_valid.any()


def test_sample_center_lands_on_a_requested_class():
    labels = _cube((10, 30, 25), value=4) + _cube((30, 10, 10), value=9)
    rng = np.random.default_rng(2)
    for _ in range(10):
        z, y, x = sample_center(labels, rng, classes=[9], p_foreground=1.0).astype(int)
        assert labels[z, y, x] == 9


def _phantom() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Air around an elliptic body (40 HU) holding a bone cylinder (700 HU shell, 300 HU core)."""
    z, y, x = np.mgrid[:48, :64, :64]
    body = ((y - 32) / 28.0) ** 2 + ((x - 32) / 30.0) ** 2 < 1
    radius2 = (y - 40) ** 2 + (x - 32) ** 2
    bone = radius2 < 64
    image = np.full(body.shape, AIR_HU, np.float32)
    image[body] = 40.0
    image[bone] = 700.0
    image[radius2 < 25] = 300.0
    return image, body & ~_dilated(bone), bone & (radius2 < 25)


def _dilated(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return ndimage.binary_dilation(mask, iterations=3)


def test_random_intensity_keeps_hu_semantics():
    image, soft, core = _phantom()
    air = np.zeros(image.shape, bool)
    air[:, :2, :2] = True
    for seed in range(12):
        out = random_intensity(image, np.random.default_rng(seed), spacing_mm=2.0, p_gamma=0.5,
                               p_low_resolution=0.5)
        assert out.dtype == np.float32 and out.shape == image.shape
        assert np.median(out[air]) < -800
        assert np.median(out[core]) > 150
        assert -150 < np.median(out[soft]) < 150


def test_random_intensity_is_deterministic_and_respects_the_mask():
    image, soft, _ = _phantom()
    first = random_intensity(image, np.random.default_rng(7), spacing_mm=2.0, mask=soft)
    second = random_intensity(image, np.random.default_rng(7), spacing_mm=2.0, mask=soft)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first[~soft], image[~soft])
    assert not np.array_equal(first[soft], image[soft])


def test_low_resolution_averages_slabs_along_one_axis_only():
    image = np.full((40, 40, 40), 40.0, np.float32)
    image[20:] += 500.0  # an edge across z
    image[:, :, 20:] += 200.0  # an edge across x
    out = _low_resolution(image, 0, 4.0)
    profile = out[:, 5, 5]
    assert np.all(np.diff(profile) >= -1e-3)
    assert 3 <= np.count_nonzero((profile > 45.0) & (profile < 535.0)) <= 5  # about one slab wide
    np.testing.assert_allclose(out[30, 5], image[30, 5], atol=1e-3)  # x edge kept sharp
