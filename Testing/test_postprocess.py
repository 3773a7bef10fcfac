"""Post-processing: components, holes, and anatomical findings (never relabelling)."""

from __future__ import annotations

import numpy as np

from LumbarSegLib.labels import NETWORK_CLASSES
from LumbarSegLib.postprocess import clean

SPACING = 2.0
CLASSES = len(NETWORK_CLASSES)


def stacked_levels(order=(1, 2, 3, 4, 5)) -> np.ndarray:
    """Probabilities of five 12-slice vertebrae stacked along z; axis 0 is superior, so L1 is at the top rows."""
    labels = np.zeros((80, 24, 24), dtype=np.uint8)
    for i, cls in enumerate(order):
        top = 80 - 2 - 14 * (i + 1)
        labels[top : top + 12, 4:20, 4:20] = cls
    return labels


def one_hot(labels: np.ndarray, confidence: float = 0.9) -> np.ndarray:
    probs = np.full((CLASSES,) + labels.shape, (1 - confidence) / (CLASSES - 1), dtype=np.float32)
    for cls in range(CLASSES):
        probs[cls][labels == cls] = confidence
    return probs


def run_clean(probs: np.ndarray):
    """Clean with bone (400 HU) wherever a class other than background wins, soft tissue elsewhere."""
    hu = np.where(probs.argmax(axis=0) > 0, 400.0, 40.0).astype(np.float32)
    return clean(probs, hu=hu, spacing_mm=SPACING, origin_z_mm=0.0)


def codes(result) -> list[str]:
    return [f.code for f in result.findings]


def test_clean_anatomy_gives_no_findings():
    result = run_clean(one_hot(stacked_levels()))
    assert codes(result) == []
    assert set(result.levels) == {"L1", "L2", "L3", "L4", "L5"}
    assert result.levels["L1"].centroid_z_mm > result.levels["L5"].centroid_z_mm
    np.testing.assert_allclose(result.levels["L3"].volume_ml, 12 * 16 * 16 * SPACING**3 / 1000)
    np.testing.assert_allclose(result.levels["L3"].confidence, 0.9, rtol=1e-6)


def test_stray_fragment_falls_to_next_most_likely_class():
    labels = stacked_levels()
    probs = one_hot(labels)
    fragment = (slice(68, 71), slice(8, 11), slice(8, 11))  # inside L1
    probs[:, fragment[0], fragment[1], fragment[2]] = 0.0
    probs[3][fragment] = 0.6  # L3 wins there...
    probs[1][fragment] = 0.4  # ...L1 is second
    result = run_clean(probs)
    assert (result.labels[fragment] == 1).all()
    assert (result.labels == 3).sum() == (labels == 3).sum()


def test_a_fragment_cannot_leave_a_stray_piece_of_its_runner_up_class():
    labels = stacked_levels()
    probs = one_hot(labels)
    fragment = (slice(30, 32), slice(8, 10), slice(8, 10))  # inside L4, far from L5
    probs[:, fragment[0], fragment[1], fragment[2]] = 0.0
    probs[5][fragment] = 0.5  # an L5 fragment...
    probs[6][fragment] = 0.3  # ...whose runner-up is L6...
    probs[4][fragment] = 0.2  # ...and L4 third
    result = run_clean(probs)
    assert (result.labels[fragment] == 4).all()
    assert codes(result) == []


def test_enclosed_hole_is_filled():
    labels = stacked_levels()
    labels[40:43, 10:13, 10:13] = 0
    result = run_clean(one_hot(labels))
    assert (result.labels[40:43, 10:13, 10:13] != 0).all()


def test_swapped_levels_are_reported_not_relabelled():
    labels = stacked_levels(order=(1, 3, 2, 4, 5))
    result = run_clean(one_hot(labels))
    assert "label_order" in codes(result)
    np.testing.assert_array_equal(result.labels, labels)


def test_stray_anchor_voxels_do_not_count_as_out_of_order():
    labels = stacked_levels()
    thoracic = NETWORK_CLASSES.index("thoracic")
    labels[40, 2, 2] = thoracic  # two stray "thoracic" voxels beside L3, below L1
    labels[40, 2, 21] = thoracic
    result = run_clean(one_hot(labels))
    assert "label_order" not in codes(result)
    assert "thoracic" not in result.levels


def test_gap_and_missing_end_levels_are_reported():
    labels = stacked_levels(order=(1, 2, 0, 4, 0))
    result = run_clean(one_hot(labels))
    missing = {f.level: f.code for f in result.findings}
    assert missing["L3"] == "missing_level"
    assert missing["L5"] == "level_not_found"


def test_sixth_lumbar_vertebra_is_flagged():
    labels = stacked_levels(order=(1, 2, 3, 4, 5))
    labels[0:6, 4:20, 4:20] = 6
    result = run_clean(one_hot(labels))
    assert "transitional_anatomy" in codes(result)


SACRUM = NETWORK_CLASSES.index("sacrum")
L5, L6 = NETWORK_CLASSES.index("L5"), NETWORK_CLASSES.index("L6")


def test_l6_without_a_vertebral_body_falls_to_its_next_most_likely_class():
    labels = stacked_levels()  # L5 occupies rows 8..19
    labels[0:6, 4:20, 4:20] = SACRUM
    piece = (slice(6, 8), slice(4, 20), slice(4, 20))  # a 4 mL slab between L5 and the sacrum: no body
    labels[piece] = 6
    probs = one_hot(labels)
    probs[SACRUM][piece] = 0.05  # the sacrum is the runner-up there
    result = run_clean(probs)
    assert (result.labels[piece] == SACRUM).all()
    assert "transitional_anatomy" not in codes(result)
    assert [f.level for f in result.findings if f.code == "implausible_level"] == ["L6"]


def test_l6_without_a_vertebral_body_is_not_given_to_l5():
    labels = stacked_levels()  # L5 occupies rows 8..19
    labels[0:6, 4:20, 4:20] = SACRUM
    piece = (slice(6, 8), slice(4, 20), slice(4, 20))  # the top of the sacrum, taken for a vertebra
    labels[piece] = L6
    probs = one_hot(labels, confidence=0.6)
    probs[L5][piece] = 0.3  # L5 is the runner-up there...
    probs[SACRUM][piece] = 0.1  # ...and the sacrum third
    result = run_clean(probs)
    assert (result.labels[piece] == SACRUM).all()
    np.testing.assert_array_equal(result.labels[8:], labels[8:])


def test_l6_with_its_own_body_is_kept_and_flagged():
    labels = np.pad(stacked_levels(), ((20, 0), (0, 0), (0, 0)))  # L5 at rows 28..39
    labels[14:26, 4:20, 4:20] = 6  # an L6 with a body like L5's
    result = run_clean(one_hot(labels))
    assert "transitional_anatomy" in codes(result)
    assert "implausible_level" not in codes(result)
    np.testing.assert_array_equal(result.labels, labels)


def test_label_covering_two_vertebral_bodies_is_flagged_not_relabelled():
    labels = stacked_levels(order=(1, 2, 3, 3, 4))  # six vertebrae seen as five: "L3" spans two
    rows = np.nonzero((labels == 3).any(axis=(1, 2)))[0]
    labels[rows.min() : rows.max() + 1, 14:20, 4:20] = 3  # their arches join across the disc, the bodies do not
    result = run_clean(one_hot(labels))
    spans = [f.level for f in result.findings if f.code == "level_spans_two_vertebrae"]
    assert spans == ["L3"]
    np.testing.assert_array_equal(result.labels, labels)


def test_low_confidence_is_flagged():
    result = run_clean(one_hot(stacked_levels(), confidence=0.5))
    assert codes(result).count("low_confidence") == 5


def test_no_lumbar_vertebra():
    result = run_clean(one_hot(np.zeros((16, 16, 16), dtype=np.uint8)))
    assert codes(result) == ["no_lumbar_vertebra"]


def test_rod_labelled_as_vertebrae_is_removed_and_reported():
    labels = np.zeros((80, 24, 24), dtype=np.uint8)
    for i in range(5):
        labels[6 + 14 * i : 18 + 14 * i, 9:15, 9:15] = 5 - i  # 12 x 12 mm, 3.5 mL each: a rod, not a vertebra
    result = run_clean(one_hot(labels))
    assert codes(result).count("implausible_level") == 5
    assert "no_lumbar_vertebra" in codes(result)
    assert not result.labels.any()


def test_a_removed_level_cannot_come_back_between_voxels():
    labels = stacked_levels()
    labels[0:6, 4:20, 4:20] = 6  # a narrow "L6" below L5, removed as implausible
    probs = one_hot(labels, confidence=0.5)
    probs[6][labels != 6] = 0.45  # runner-up everywhere else: interpolation between two winners would favour it
    hu = np.where((labels > 0) & (labels < 6), 400.0, 40.0).astype(np.float32)
    hu[0:6, 10:12, 10:12] = 400.0
    result = clean(probs, hu=hu, spacing_mm=SPACING, origin_z_mm=0.0)
    assert "implausible_level" in codes(result) and not (result.labels == 6).any()
    assert not probs[6].any()
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, rtol=1e-5)
    midway = (probs[:, 40] + probs[:, 41]) / 2  # between L3's top and the disc above it
    assert (midway.argmax(axis=0) != 6).all()


def test_a_removed_level_certain_to_the_last_digit_leaves_background_not_nan():
    labels = stacked_levels()
    labels[0:6, 4:20, 4:20] = SACRUM
    piece = (slice(6, 8), slice(4, 20), slice(4, 20))  # a bodiless "L6" between L5 and the sacrum
    labels[piece] = 6
    probs = one_hot(labels)
    probs[:, 6:8, 4:20, 4:20] = 0.0
    probs[6][piece] = 1.0  # every other class underflowed to zero in the softmax
    result = run_clean(probs)
    assert not np.isnan(probs).any()
    assert (result.labels[piece] == 0).all()
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, rtol=1e-5)


def test_a_dropped_fragment_certain_to_the_last_digit_leaves_background():
    labels = np.pad(stacked_levels(), ((20, 8), (0, 0), (0, 0)))  # L5 at rows 28..39, L1 at 84..95
    labels[14:26, 4:20, 4:20] = 6  # an L6 with a body like L5's
    labels[0:12, 4:20, 4:20] = SACRUM
    labels[98:106, 4:20, 4:20] = NETWORK_CLASSES.index("thoracic")  # every class present: none is absent
    fragment = (slice(42, 44), slice(0, 3), slice(0, 3))  # beside L4, apart from L3
    probs = one_hot(labels)
    probs[:, fragment[0], fragment[1], fragment[2]] = 0.0
    probs[3][fragment] = 1.0  # L3 keeps its vertebra while the fragment loses its only class
    result = run_clean(probs)
    assert set(np.unique(result.labels)) == set(range(CLASSES))
    assert (result.labels[fragment] == 0).all()
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, rtol=1e-5)


def test_soft_tissue_labelled_around_a_narrow_bone_is_not_a_vertebra():
    labels = stacked_levels()
    probs = one_hot(labels)
    hu = np.full(labels.shape, 40.0, dtype=np.float32)
    hu[:, 10:14, 10:14] = 900.0  # only an 8 x 8 mm rod inside the 32 x 32 mm "vertebrae" is bone
    result = clean(probs, hu=hu, spacing_mm=SPACING, origin_z_mm=0.0)
    assert codes(result).count("implausible_level") == 5


def l5_above_l6() -> np.ndarray:
    """An L5 (rows 28..39) above an L6 (rows 14..25) whose arches join across the disc."""
    labels = np.pad(stacked_levels(), ((20, 0), (0, 0), (0, 0)))
    labels[14:26, 4:20, 4:20] = L6
    labels[26:28, 14:20, 4:20] = L5  # the facet joints: a narrow bridge over the disc
    return labels


def mix_in(probs: np.ndarray, where: np.ndarray, wins: int, other: int) -> None:
    """Make ``wins`` and ``other`` alternate voxel by voxel (a checkerboard) on ``where``."""
    checker = (np.indices(where.shape).sum(axis=0) % 2 == 0) & where
    probs[wins][checker], probs[other][checker] = probs[other][checker], probs[wins][checker]


def test_vertebra_mixed_between_two_levels_is_split_one_level_per_vertebra():
    labels = l5_above_l6()
    probs = one_hot(labels)
    mix_in(probs, labels == L6, L5, L6)  # the network cannot tell L5 from L6 on the lower vertebra
    result = run_clean(probs)
    np.testing.assert_array_equal(result.labels[14:26], labels[14:26])
    np.testing.assert_array_equal(result.labels[28:], labels[28:])
    assert set(np.unique(result.labels[26:28])) <= {0, L5, L6}
    assert [f.level for f in result.findings if f.code == "mixed_levels"] == ["L6"]
    assert "transitional_anatomy" in codes(result)


def test_one_vertebra_mixed_between_two_levels_takes_the_more_likely_one():
    labels = stacked_levels()
    probs = one_hot(labels)
    lower_half = np.zeros(labels.shape, dtype=bool)
    lower_half[:14] = labels[:14] == L5  # the bottom of L5 (rows 8..13), L6 and L5 alternating
    probs[L6][lower_half] = 0.85
    mix_in(probs, lower_half, L6, L5)
    result = run_clean(probs)
    np.testing.assert_array_equal(result.labels, labels)
    assert [f.level for f in result.findings if f.code == "mixed_levels"] == ["L6"]
    assert "transitional_anatomy" not in codes(result)


def test_unmixed_levels_are_left_alone():
    labels = l5_above_l6()
    probs = one_hot(labels)
    result = run_clean(probs)
    np.testing.assert_array_equal(result.labels, labels)
    assert "mixed_levels" not in codes(result)
