"""The XUNet crop grows where the localizer's box cut the lumbar spine."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch

from LumbarSegLib import geometry, segment
from LumbarSegLib.inference import sliding_window
from LumbarSegLib.labels import NETWORK_CLASSES
from LumbarSegLib.models import ModelSpec, build_network
from LumbarSegLib.segment import GROWTH_MM, L1_HEADROOM_MM, MAX_WINDOW, grown_box, inference_window

SPACING = 2.5
L3 = NETWORK_CLASSES.index("L3")
SACRUM = NETWORK_CLASSES.index("sacrum")
L1 = NETWORK_CLASSES.index("L1")


def crop_grid(lower_z_mm: float, slices: int = 40) -> sitk.Image:
    crop = sitk.Image([16, 16, slices], sitk.sitkUInt8)
    crop.SetSpacing([SPACING] * 3)
    crop.SetOrigin([0.0, 0.0, lower_z_mm])
    return crop


def probabilities_with(cls_by_slices: dict[int, slice], slices: int = 40) -> np.ndarray:
    probabilities = np.zeros((len(NETWORK_CLASSES), slices, 16, 16), dtype=np.float32)
    probabilities[0] = 1.0
    for cls, rows in cls_by_slices.items():
        probabilities[:, rows, 4:12, 4:12] = 0.0
        probabilities[cls, rows, 4:12, 4:12] = 1.0
    return probabilities


def test_a_lumbar_label_at_the_top_grows_the_box_upwards_only():
    crop = crop_grid(0.0)
    box = geometry.physical_box(crop)
    scan = geometry.Box(np.array([-50.0, -50.0, -500.0]), np.array([100.0, 100.0, 500.0]))
    grown = grown_box(box, probabilities_with({L3: slice(30, 40), SACRUM: slice(0, 5)}), crop, scan)
    np.testing.assert_allclose(grown.upper - box.upper, [0.0, 0.0, GROWTH_MM])
    np.testing.assert_allclose(grown.lower, box.lower)


def test_a_lumbar_label_at_the_bottom_grows_the_box_downwards():
    crop = crop_grid(0.0)
    box = geometry.physical_box(crop)
    scan = geometry.Box(np.array([-50.0, -50.0, -500.0]), np.array([100.0, 100.0, 500.0]))
    grown = grown_box(box, probabilities_with({L3: slice(0, 10)}), crop, scan)
    np.testing.assert_allclose(box.lower - grown.lower, [0.0, 0.0, GROWTH_MM])


def test_l1_close_to_the_top_grows_the_box_upwards_to_show_t12():
    crop = crop_grid(0.0)
    box = geometry.physical_box(crop)
    scan = geometry.Box(np.array([-50.0, -50.0, -500.0]), np.array([100.0, 100.0, 500.0]))
    headroom = int(L1_HEADROOM_MM / SPACING)
    close = grown_box(box, probabilities_with({L1: slice(40 - headroom - 8, 40 - headroom + 2)}), crop, scan)
    np.testing.assert_allclose(close.upper - box.upper, [0.0, 0.0, GROWTH_MM])
    assert grown_box(box, probabilities_with({L1: slice(40 - headroom - 12, 40 - headroom - 2)}), crop, scan) is None


def test_nothing_grows_when_the_spine_ends_inside_or_the_scan_ends_there():
    crop = crop_grid(0.0)
    box = geometry.physical_box(crop)
    scan = geometry.Box(np.array([-50.0, -50.0, -500.0]), np.array([100.0, 100.0, 500.0]))
    assert grown_box(box, probabilities_with({L3: slice(10, 30)}), crop, scan) is None
    assert grown_box(box, probabilities_with({L3: slice(30, 40)}), crop, box) is None


XUNET_SPEC = ModelSpec(kind="xunet", channels=(8, 16, 32, 64), spacing_mm=SPACING, patch=(96, 64, 64),
                       num_classes=len(NETWORK_CLASSES))


def test_the_xunet_sees_the_whole_crop_in_one_window():
    assert inference_window((136, 72, 72), XUNET_SPEC, multiple_of=8) == (136, 72, 72)
    assert inference_window((130, 70, 66), XUNET_SPEC, multiple_of=8) == (136, 72, 72)


def test_a_crop_smaller_than_the_training_patch_is_padded_to_it():
    assert inference_window((40, 50, 64), XUNET_SPEC, multiple_of=8) == (96, 64, 64)


def test_a_crop_larger_than_the_window_limit_is_covered_by_sliding_windows_of_the_limit():
    window = inference_window((400, 120, 72), XUNET_SPEC, multiple_of=8)
    assert window == (MAX_WINDOW[0], MAX_WINDOW[1], 72)
    assert all(n % 8 == 0 for n in MAX_WINDOW)


def test_segment_probabilities_runs_the_xunet_once_over_the_whole_crop(monkeypatch):
    calls = []

    def recording_sliding_window(net, volume, *, patch, **options):
        calls.append((volume.shape, patch))
        return sliding_window(net, volume, patch=patch, **options)

    monkeypatch.setattr(segment, "sliding_window", recording_sliding_window)
    spec = ModelSpec(kind="xunet", channels=(4, 8, 16, 32), spacing_mm=SPACING, patch=(48, 32, 32),
                     num_classes=len(NETWORK_CLASSES))
    net = build_network(spec).eval()
    ct = sitk.Image([70, 60, 150], sitk.sitkInt16)
    ct.SetSpacing([1.5, 1.5, 1.0])
    box = geometry.Box(np.array([20.0, 20.0, 10.0]), np.array([80.0, 70.0, 140.0]))
    probabilities, crop, _ = segment.segment_probabilities(ct, box, net, spec, device=torch.device("cpu"))
    (shape, window), = calls
    assert shape == probabilities.shape[1:] == crop.GetSize()[::-1]
    assert all(w >= s for w, s in zip(window, shape)) and any(w > p for w, p in zip(window, spec.patch))
