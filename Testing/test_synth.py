"""Tests of synthetic CT from label maps (LumbarSegLib.training.synth)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from LumbarSegLib.training.synth import (
    BONE_THRESHOLD_HU,
    gas_classes,
    load_total_map,
    synth_image,
    tissue_hu_priors,
    total_to_verse,
)

TSEXAMPLE = Path(__file__).resolve().parents[2] / "shared/data/realct/derivatives/sub-tsexample"
TOTAL_MAP = TSEXAMPLE / "sub-tsexample_seg-total_msk.nii.gz"
NAMES = {1: "liver", 2: "vertebrae_L1", 3: "vertebrae_T12", 4: "sacrum", 5: "vertebrae_S1",
         6: "colon", 7: "lung_lower_lobe_left", 8: "rib_left_12", 9: "something_new", 10: "vertebrae_C3"}


def _toy_map() -> np.ndarray:
    """A liver block, a stack of two vertebra blocks and a colon block in a 48x64x64 volume."""
    labels = np.zeros((48, 64, 64), np.uint8)
    labels[8:20, 30:44, 24:40] = 3  # T12
    labels[22:34, 30:44, 24:40] = 2  # L1
    labels[10:30, 12:28, 8:30] = 1  # liver
    labels[30:44, 10:26, 34:56] = 6  # colon
    return labels


def test_total_to_verse_maps_levels_and_sacrum():
    total = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    verse = total_to_verse(total, NAMES)
    expected = {0: 0, 1: 0, 2: 20, 3: 19, 4: 26, 5: 26, 6: 0, 7: 0, 8: 0, 9: 0, 10: 3, 11: 0}
    assert verse.dtype == np.uint8
    assert {int(t): int(v) for t, v in zip(total.ravel(), verse.ravel())} == expected


def test_tissue_priors_follow_names():
    priors = tissue_hu_priors(NAMES)
    assert set(priors) == set(NAMES)
    for bone in (2, 3, 4, 5, 8, 10):
        assert priors[bone][0] >= BONE_THRESHOLD_HU
    for soft in (1, 6, 9):
        assert -150 < priors[soft][0] < BONE_THRESHOLD_HU
    assert priors[7][0] < -600
    assert gas_classes(NAMES) == {6}


def test_synth_ct_is_deterministic_and_plausible():
    labels = _toy_map()
    priors = tissue_hu_priors(NAMES)
    first = synth_image(labels, np.random.default_rng(0), spacing_mm=2.0, priors=priors)
    second = synth_image(labels, np.random.default_rng(0), spacing_mm=2.0, priors=priors)
    np.testing.assert_array_equal(first, second)
    assert first.dtype == np.float32 and first.shape == labels.shape
    for seed in range(5):
        image = synth_image(labels, np.random.default_rng(seed), spacing_mm=2.0, priors=priors)
        bone = np.median(image[np.isin(labels, (2, 3))])
        assert bone > 150 and bone > np.median(image[labels == 1]) + 100
        assert np.all(image[:, :3, :3] < -900)  # a corner far outside the body


def test_bone_has_a_bright_cortical_rim():
    labels = _toy_map()
    image = synth_image(labels, np.random.default_rng(1), spacing_mm=2.0, priors=tissue_hu_priors(NAMES))
    assert np.median(image[23:33, 32:42, 26:38]) + 150 < np.median(image[28, 30:44, 24])


def test_gas_appears_only_in_gas_classes():
    labels = _toy_map()
    priors = tissue_hu_priors(NAMES)
    other_organs = ndimage.binary_erosion(np.isin(labels, (1, 2, 3)), iterations=2)
    darkest_colon = []
    for seed in range(4):
        image = synth_image(labels, np.random.default_rng(seed), spacing_mm=2.0, priors=priors,
                            gas_labels=gas_classes(NAMES))
        assert np.all(image[other_organs] > -300)
        darkest_colon.append(image[labels == 6].min())
    assert min(darkest_colon) < -700


def test_spine_only_map_gets_a_body_and_bright_bone():
    labels = np.zeros((48, 160, 128), np.uint8)
    labels[4:22, 60:75, 56:72] = 19
    labels[24:44, 60:75, 56:72] = 20
    for seed in range(4):
        image = synth_image(labels, np.random.default_rng(seed), spacing_mm=2.0)
        assert np.median(image[labels > 0]) > 150
        assert -200 < np.median(image[4:44, 50:58, 56:72]) < 150  # 4-20 mm anterior of the spine
        # the skin is at most 80 mm (40 voxels) behind the spine, plus the 8 mm outline grid
        assert np.all(image[:, 124:, :] < -900)


def test_random_mode_draws_a_new_contrast_per_class():
    labels = _toy_map()
    images = [synth_image(labels, np.random.default_rng(s), spacing_mm=2.0,
                          priors=tissue_hu_priors(NAMES), mode="random") for s in range(2)]
    for image in images:
        assert image.dtype == np.float32 and np.isfinite(image).all()
        assert -1300 < image.min() and image.max() < 2300
    assert abs(np.median(images[0][labels == 1]) - np.median(images[1][labels == 1])) > 1.0
    with pytest.raises(ValueError):
        synth_image(labels, np.random.default_rng(0), spacing_mm=2.0, mode="mri")


@pytest.mark.skipif(not TOTAL_MAP.exists(), reason="real CT data absent")
def test_total_to_verse_reproduces_the_real_vertebra_mask():
    total_image, names = load_total_map(TOTAL_MAP, TSEXAMPLE / "total_classes.json")
    total = sitk.GetArrayFromImage(total_image)
    vert = sitk.GetArrayFromImage(sitk.ReadImage(str(TSEXAMPLE / "sub-tsexample_seg-vert_msk.nii.gz")))
    verse = total_to_verse(total, names)
    assert set(np.unique(verse)) == set(np.unique(vert))
    # The reference mask kept only vertebrae_S1 as 26; we also map the rest of the sacrum to 26.
    whole_sacrum = total == next(k for k, n in names.items() if n == "sacrum")
    np.testing.assert_array_equal(verse[~whole_sacrum], vert[~whole_sacrum])
    assert np.all(vert[whole_sacrum] == 0) and np.all(verse[whole_sacrum] == 26)


@pytest.mark.skipif(not TOTAL_MAP.exists(), reason="real CT data absent")
def test_synth_from_the_real_total_map():
    total_image, names = load_total_map(TOTAL_MAP, TSEXAMPLE / "total_classes.json")
    total = sitk.GetArrayFromImage(sitk.DICOMOrient(total_image, "LPS"))
    image = synth_image(total, np.random.default_rng(0), spacing_mm=3.0, priors=tissue_hu_priors(names),
                        gas_labels=gas_classes(names))
    lumbar = np.isin(total_to_verse(total, names), (20, 21, 22, 23, 24))
    muscle = np.isin(total, [k for k, n in names.items() if n.startswith(("iliopsoas", "autochthon"))])
    assert np.median(image[lumbar]) > 150
    assert -100 < np.median(image[muscle]) < 120
    assert np.median(image[0:2, 0:3, :]) < -900  # the corners of the field of view are air
