"""Boundary refinement: the cortical rim outside the restored labels, exact on synthetic blocks."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from LumbarSegLib.boundary import RIM_EDGE_FRACTION, extend_to_cortical_rim
from LumbarSegLib.labels import NETWORK_CLASSES
from LumbarSegLib.pipeline import restore_to_input

SOFT_TISSUE_HU = 40.0
CORE_HU = 200.0
CORTEX_HU = 500.0
LUMBAR = (20, 21)
SACRUM = 26


def vertebra_block(shape=(20, 20, 20), *, cortex: bool) -> tuple[np.ndarray, np.ndarray]:
    """A 10-voxel cube of bone (bright one-voxel shell if ``cortex``) in soft tissue, labelled 8^3 inside."""
    hu = np.full(shape, SOFT_TISSUE_HU, dtype=np.float32)
    hu[5:15, 5:15, 5:15] = CORTEX_HU if cortex else CORE_HU
    hu[6:14, 6:14, 6:14] = CORE_HU
    labels = np.zeros(shape, dtype=np.uint8)
    labels[6:14, 6:14, 6:14] = 20
    return labels, hu


def test_bright_rim_joins_the_vertebra_by_one_face_neighbour():
    labels, hu = vertebra_block(cortex=True)
    grown = extend_to_cortical_rim(labels, hu, growing=LUMBAR)
    assert np.count_nonzero(grown == 20) == 8**3 + 6 * 8**2
    assert np.all(grown[5:15, 6:14, 6:14] == 20)
    assert grown[5, 5, 5] == 0 and grown[5, 5, 10] == 0  # shell corners and edges are not face neighbours
    assert not np.any(grown[hu == SOFT_TISSUE_HU])


def test_rim_reaching_the_edge_fraction_grows_and_darker_tissue_does_not():
    labels, hu = vertebra_block(cortex=False)
    shell = (hu == CORE_HU) & (labels == 0)
    hu[shell] = RIM_EDGE_FRACTION * CORE_HU + 0.5
    assert np.count_nonzero(extend_to_cortical_rim(labels, hu, growing=LUMBAR) == 20) == 8**3 + 6 * 8**2
    hu[shell] = RIM_EDGE_FRACTION * CORE_HU - 1.0
    np.testing.assert_array_equal(extend_to_cortical_rim(labels, hu, growing=LUMBAR), labels)


def test_soft_tissue_around_a_vertebra_is_never_taken():
    labels = np.zeros((16, 16, 16), dtype=np.uint8)
    labels[4:12, 4:12, 4:12] = 21
    hu = np.where(labels > 0, CORTEX_HU, SOFT_TISSUE_HU).astype(np.float32)
    np.testing.assert_array_equal(extend_to_cortical_rim(labels, hu, growing=LUMBAR), labels)


def test_a_voxel_touching_two_vertebrae_stays_background():
    labels = np.zeros((9, 6, 6), dtype=np.uint8)
    labels[0:4] = 20
    labels[5:9] = 21
    hu = np.full(labels.shape, CORTEX_HU, dtype=np.float32)
    grown = extend_to_cortical_rim(labels, hu, growing=LUMBAR)
    assert np.all(grown[4] == 0)
    np.testing.assert_array_equal(grown, labels)


def test_context_bone_neither_grows_nor_lets_a_vertebra_grow_against_it():
    labels = np.zeros((9, 6, 6), dtype=np.uint8)
    labels[0:4] = 20
    labels[5:9] = SACRUM
    hu = np.full(labels.shape, CORTEX_HU, dtype=np.float32)
    np.testing.assert_array_equal(extend_to_cortical_rim(labels, hu, growing=LUMBAR), labels)
    labels[5:9] = 0
    labels[7:9] = SACRUM
    grown = extend_to_cortical_rim(labels, hu, growing=LUMBAR)
    assert np.all(grown[4] == 20) and np.all(grown[5:7] == 0)


def test_inputs_are_not_modified_and_the_rim_stops_at_the_grid_border():
    labels, hu = vertebra_block((10, 10, 10), cortex=True)
    labels_before, hu_before = labels.copy(), hu.copy()
    grown = extend_to_cortical_rim(labels, hu, growing=LUMBAR)
    np.testing.assert_array_equal(labels, labels_before)
    np.testing.assert_array_equal(hu, hu_before)
    assert np.count_nonzero(grown == 20) == 4**3 + 3 * 4**2  # cut by the grid: three faces have a rim


def test_the_pipeline_restores_each_vertebra_with_its_rim():
    labels, hu = vertebra_block((24, 22, 20), cortex=True)
    ct = sitk.GetImageFromArray(hu.astype(np.int16))
    ct.SetSpacing((0.8, 0.9, 1.5))
    ct.SetDirection((1, 0, 0, 0, -1, 0, 0, 0, 1))
    probabilities = np.zeros((len(NETWORK_CLASSES),) + labels.shape, dtype=np.float32)
    probabilities[NETWORK_CLASSES.index("L3")] = labels > 0
    probabilities[0] = labels == 0
    restored = restore_to_input(probabilities, ct, ct)
    assert set(np.unique(restored)) == {0, 22}
    assert np.count_nonzero(restored) == 8**3 + 6 * 8**2
