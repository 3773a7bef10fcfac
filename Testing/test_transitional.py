"""Signs of transitional anatomy, on phantoms whose labels are exact (network classes on a 2 mm grid)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from LumbarSegLib.labels import CLASS_OF_VERSE, lookup_table
from LumbarSegLib.phantom import render, sample_anatomy
from LumbarSegLib.postprocess import body_part
from LumbarSegLib.transitional import (
    L1_CLASS, RIB_REACH_MM, body_columns, rib_lengths, thickest_radius_mm, transitional_findings,
    unlabelled_bone, vertebra_above,
)

SPACING = 2.0
TO_CLASSES = lookup_table(CLASS_OF_VERSE)


def phantom_crop(seed: int, variant: str, fov: str) -> tuple[np.ndarray, np.ndarray]:
    """Network classes and HU of a phantom on an identity-direction 2 mm grid (a canonical crop)."""
    anatomy = sample_anatomy(seed, variant=variant)
    ct, labels = render(anatomy, anatomy.field_of_view(fov, spacing=(SPACING,) * 3), realism=False, seed=seed)
    return TO_CLASSES[sitk.GetArrayFromImage(labels)], sitk.GetArrayFromImage(ct).astype(np.float32)


def codes(labels: np.ndarray, hu: np.ndarray, covered: np.ndarray | None = None) -> list[str]:
    covered = np.ones(labels.shape, dtype=bool) if covered is None else covered
    return [f.code for f in transitional_findings(labels, hu, covered, spacing_mm=SPACING)]


@pytest.mark.parametrize("seed", [1, 2])
def test_rib_free_vertebra_above_l1_is_reported(seed):
    assert codes(*phantom_crop(seed, "11_ribs", "thoracolumbar")) == ["rib_free_thoracic"]


@pytest.mark.parametrize("variant", ["normal", "T13"])
def test_rib_bearing_vertebra_above_l1_is_not_reported(variant):
    labels, hu = phantom_crop(1, variant, "thoracolumbar")
    above = vertebra_above(labels == L1_CLASS, labels, np.ones(labels.shape, dtype=bool))
    assert above is not None
    assert codes(labels, hu) == []


def test_rib_absence_is_not_judged_where_the_scan_does_not_reach():
    labels, hu = phantom_crop(1, "11_ribs", "thoracolumbar")
    columns = np.nonzero((labels == L1_CLASS).any(axis=(0, 1)))[0]
    narrow = np.zeros(labels.shape, dtype=bool)
    half = int(RIB_REACH_MM / SPACING) - 4
    centre = int(columns.mean())
    narrow[..., centre - half:centre + half] = True
    assert codes(labels, hu, narrow) == []


def test_rib_absence_is_not_judged_when_the_crop_stops_above_l1():
    labels, hu = phantom_crop(1, "11_ribs", "thoracolumbar")
    top = np.nonzero((labels == L1_CLASS).any(axis=(1, 2)))[0][-1]
    assert codes(labels[:top + 5], hu[:top + 5]) == []


def test_a_thick_dense_organ_touching_the_vertebra_is_not_a_rib():
    labels, hu = phantom_crop(2, "11_ribs", "thoracolumbar")
    l1 = labels == L1_CLASS
    z, y, _ = np.nonzero(body_part(l1))
    first, _ = body_columns(l1)
    kidney = np.zeros(labels.shape, dtype=bool)
    # a 200 HU block, 30 mm thick, against the side of L1's body and 30 mm wide
    kidney[z.min():z.min() + 15, y.min():y.min() + 15, first - 15:first] = True
    kidney &= labels == 0
    hu = np.where(kidney, 200.0, hu).astype(np.float32)
    assert rib_lengths(l1, unlabelled_bone(labels, hu), spacing_mm=SPACING) == (0.0, 0.0)


def test_thickest_radius_tells_a_rod_from_a_block():
    rod = np.zeros((40, 40, 40), dtype=bool)
    rod[18:22, 18:22, :] = True
    block = np.zeros((40, 40, 40), dtype=bool)
    block[5:35, 5:35, 5:35] = True
    assert thickest_radius_mm(rod, spacing_mm=SPACING) <= 4.0
    assert thickest_radius_mm(block, spacing_mm=SPACING) >= 28.0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_dysplastic_l5_transverse_process_is_reported(seed):
    assert codes(*phantom_crop(seed, "sacralized_L5", "lumbar")) == ["lumbosacral_transitional_vertebra"]


@pytest.mark.parametrize("variant", ["normal", "L6", "11_ribs"])
def test_normal_l5_transverse_processes_are_not_reported(variant):
    assert codes(*phantom_crop(2, variant, "lumbar")) == []
