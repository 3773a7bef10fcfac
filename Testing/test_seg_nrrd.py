"""Slicer .seg.nrrd writer: read back with slicerio, names, colours, terminology, geometry."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio
from scipy.spatial.transform import Rotation

from LumbarSegLib import labels as lbl
from LumbarSegLib.seg_nrrd import output_voxels, read_seg_nrrd_segments, write_seg_nrrd
from LumbarSegLib.terminology import terminology_entry

OBLIQUE = Rotation.from_euler("zyx", [25, -10, 15], degrees=True).as_matrix()
GRIDS = {
    "axis_aligned": (np.eye(3), (1.0, 1.0, 1.0)),
    "oblique_anisotropic": (OBLIQUE, (0.7, 0.9, 2.5)),
    "ras_stored": (np.diag([-1.0, -1.0, 1.0]), (0.8, 0.8, 3.0)),
    "flipped": (np.diag([-1.0, 1.0, 1.0]), (0.8, 0.8, 3.0)),
    "oblique_flipped": (OBLIQUE @ np.diag([1.0, 1.0, -1.0]), (1.2, 0.6, 1.5)),
}


def label_map(direction: np.ndarray, spacing: tuple[float, float, float], values=(20, 21, 22, 23, 24)) -> sitk.Image:
    """A 30x24x40 (x, y, z) map with one slab per value along z, plus a stray sacrum voxel block."""
    kji = np.zeros((40, 24, 30), np.uint8)
    for n, value in enumerate(values):
        kji[2 + 7 * n: 7 + 7 * n, 4 + n: 20, 3: 25 - n] = value
    kji[37:40, 0:3, 0:3] = lbl.SACRUM_VALUE
    image = sitk.GetImageFromArray(kji)
    image.SetSpacing(spacing)
    image.SetOrigin((-12.5, 40.25, -301.0))
    image.SetDirection(direction.ravel().tolist())
    return image


@pytest.mark.parametrize("grid", GRIDS)
def test_voxels_and_geometry_read_back(tmp_path, grid):
    direction, spacing = GRIDS[grid]
    assert abs(abs(np.linalg.det(direction)) - 1) < 1e-9
    image = label_map(direction, spacing)
    path = tmp_path / "case.seg.nrrd"
    write_seg_nrrd(image, path)

    seg = slicerio.read_segmentation(str(path))
    expected = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    expected[expected == lbl.SACRUM_VALUE] = 0
    assert seg["voxels"].shape == expected.shape
    assert np.array_equal(seg["voxels"], expected)
    ijk_to_lps = seg["ijkToLPS"]
    for index in [(0, 0, 0), (29, 0, 0), (0, 23, 0), (0, 0, 39), (7, 11, 13)]:
        point = ijk_to_lps @ np.array([*index, 1.0])
        assert np.allclose(point[:3], image.TransformIndexToPhysicalPoint(index), atol=1e-6)


def test_segments_names_values_colours_terminology(tmp_path):
    image = label_map(OBLIQUE, (0.7, 0.9, 2.5), values=(20, 21, 22, 23, 24, 25))
    path = tmp_path / "case.seg.nrrd"
    write_seg_nrrd(image, path)

    seg = slicerio.read_segmentation(str(path))
    names = ["L1", "L2", "L3", "L4", "L5", "L6"]
    assert slicerio.segment_names(seg) == names
    for name, segment in zip(names, seg["segments"]):
        assert segment["labelValue"] == lbl.VERSE_VALUE[name]
        assert segment["layer"] == 0
        assert np.allclose(segment["color"], lbl.COLORS[name], atol=1e-6)
        term = segment["terminology"]
        assert term["contextName"] == "Segmentation category and type - LumbarSeg"
        assert term["category"] == ["SCT", "123037004", "Anatomical Structure"]
        assert term["type"] == ["SCT", lbl.SNOMED[name].value, lbl.SNOMED[name].meaning]
        assert "typeModifier" not in term and "anatomicRegion" not in term
        mask = slicerio.segment_mask(seg, name)
        assert mask.sum() == (sitk.GetArrayViewFromImage(image) == lbl.VERSE_VALUE[name]).sum() > 0
    assert seg["segments"][0]["terminology"]["type"] == ["SCT", "66794005", "L1 vertebra"]


def test_header_tags_are_slicer_format(tmp_path):
    path = tmp_path / "case.seg.nrrd"
    write_seg_nrrd(label_map(np.eye(3), (1.0, 1.0, 1.0)), path)
    text = path.read_bytes().split(b"\n\n")[0].decode()  # the NRRD header is plain text up to a blank line
    header = dict(line.split(":=", 1) if ":=" in line else line.split(": ", 1)
                  for line in text.splitlines()[1:] if not line.startswith("#"))
    assert header["space"] == "left-posterior-superior"
    assert header["Segment0_Name"] == "L1"
    assert header["Segment0_LabelValue"] == "20"
    assert header["Segment0_Extent"] == "0 29 0 23 0 39"
    tags = header["Segment0_Tags"]
    assert "TerminologyEntry:" in tags
    entry = tags.split("TerminologyEntry:")[1].split("|")[0]
    parts = entry.split("~")
    assert len(parts) == 7
    assert parts == [
        "Segmentation category and type - LumbarSeg",
        "SCT^123037004^Anatomical Structure",
        "SCT^66794005^L1 vertebra",
        "^^",
        "Anatomic codes - DICOM master list",
        "^^",
        "^^",
    ]
    # The same entry the Slicer module tags segments with and its terminology context defines.
    for n, name in enumerate(["L1", "L2", "L3", "L4", "L5"]):
        assert f"TerminologyEntry:{terminology_entry(name)}|" in header[f"Segment{n}_Tags"]


def test_only_present_levels_and_reader(tmp_path):
    path = tmp_path / "case.seg.nrrd"
    write_seg_nrrd(label_map(np.eye(3), (1.0, 1.0, 1.0), values=(21, 23)), path)
    segments = read_seg_nrrd_segments(path)
    assert [s["name"] for s in segments] == ["L2", "L4"]
    assert [s["label_value"] for s in segments] == [21, 23]
    assert np.allclose(segments[1]["color"], lbl.COLORS["L4"], atol=1e-6)
    assert segments[1]["terminology"]["type"] == ["SCT", "11994002", "L4 vertebra"]


def test_values_other_than_the_lumbar_levels_are_written_as_background():
    kji = np.zeros((12, 5, 6), dtype=np.uint8)
    kji[3, 1, 1], kji[4, 2, 2], kji[8, 3, 3], kji[9, 0, 0] = 21, 7, 25, 200
    voxels, present = output_voxels(kji)
    expected = np.zeros_like(kji)
    expected[3, 1, 1], expected[8, 3, 3] = 21, 25
    np.testing.assert_array_equal(voxels, expected)
    assert present == [21, 25]
    empty, none = output_voxels(np.zeros_like(kji))
    assert not empty.any() and none == []
