"""Tests of LumbarSegLib.io: valid inputs round-trip exactly, every bad input gets one clear error line."""

from __future__ import annotations

import os
import random
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from LumbarSegLib import io
from LumbarSegLib.errors import InputError, ResourceLimitError
from LumbarSegLib.io import ImageHeader, estimate_memory_bytes, output_stem, read_ct

REAL_CT = Path(__file__).resolve().parents[2] / "shared" / "data" / "realct" / "rawdata"
OBLIQUE = sitk.VersorTransform((0.2, -0.3, 0.1), 0.5).GetMatrix()
SERIES_UID = "1.2.826.0.1.3680043.2.1125.7.1"


def ct_array(shape=(12, 18, 20), *, bone: bool = True, air: bool = True) -> np.ndarray:
    """A small CT-like int16 volume (z, y, x): air, a soft-tissue body, a bone block; every voxel distinct."""
    z, y, x = np.indices(shape)
    body = ((y - shape[1] / 2) / (shape[1] * 0.4)) ** 2 + ((x - shape[2] / 2) / (shape[2] * 0.4)) ** 2 < 1
    array = np.where(body, 20, -1000 if air else -100).astype(np.int16)
    array += ((x + 3 * y + 7 * z) % 11).astype(np.int16)
    if bone:
        array[:, shape[1] // 2 : shape[1] // 2 + 3, shape[2] // 2 - 2 : shape[2] // 2 + 2] = 700
    return array


def ct_image(array: np.ndarray | None = None, *, spacing=(0.8, 0.9, 2.5), direction=OBLIQUE) -> sitk.Image:
    image = sitk.GetImageFromArray(ct_array() if array is None else array)
    image.SetSpacing(spacing)
    image.SetOrigin((-12.5, 30.25, 101.0))
    image.SetDirection(direction)
    return image


def write(image: sitk.Image, path: Path, *, compress: bool = False) -> Path:
    sitk.WriteImage(image, os.fspath(path), useCompression=compress)
    return path


def write_dicom_series(
    image: sitk.Image,
    folder: Path,
    *,
    tilt_mm: float = 0.0,
    skip: tuple[int, ...] = (),
    duplicate: int | None = None,
    modality: str = "CT",
    shuffle: bool = False,
) -> Path:
    """Write one DICOM file per slice (after SimpleITK's DicomSeriesFromArray example).

    ``tilt_mm`` shifts slice k by k*tilt_mm along the row direction (a gantry-tilted, sheared series);
    ``shuffle`` scrambles both file names and instance numbers so only the positions give the order.
    """
    folder.mkdir(parents=True, exist_ok=True)
    direction = image.GetDirection()
    orientation = "\\".join(f"{v:.10f}" for v in (direction[0], direction[3], direction[6],
                                                   direction[1], direction[4], direction[7]))
    shared = [
        ("0008|0008", "ORIGINAL\\PRIMARY\\AXIAL"),
        ("0008|0060", modality),
        ("0020|000d", "1.2.826.0.1.3680043.2.1125.7"),
        ("0020|000e", SERIES_UID),
        ("0020|0037", orientation),
        ("0008|103e", "synthetic"),
    ]
    order = list(range(image.GetDepth()))
    labels = order[:]
    if shuffle:
        random.Random(3).shuffle(labels)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    row = np.array(direction[0::3])
    for k in order:
        if k in skip:
            continue
        position = np.array(image.TransformIndexToPhysicalPoint((0, 0, k))) + k * tilt_mm * row
        if duplicate is not None and k == duplicate + 1:
            position = np.array(image.TransformIndexToPhysicalPoint((0, 0, duplicate)))
        slice_image = image[:, :, k]
        for tag, value in shared:
            slice_image.SetMetaData(tag, value)
        slice_image.SetMetaData("0020|0032", "\\".join(f"{v:.10f}" for v in position))
        slice_image.SetMetaData("0020|0013", str(labels[k] + 1))
        slice_image.SetMetaData("0008|0018", f"{SERIES_UID}.{k + 1}")
        writer.SetFileName(os.fspath(folder / f"IM{labels[k]:04d}.dcm"))
        writer.Execute(slice_image)
    return folder


def assert_same_geometry(actual: sitk.Image, expected: sitk.Image, *, atol: float) -> None:
    assert actual.GetSize() == expected.GetSize()
    np.testing.assert_allclose(actual.GetSpacing(), expected.GetSpacing(), atol=atol, rtol=0)
    np.testing.assert_allclose(actual.GetOrigin(), expected.GetOrigin(), atol=atol, rtol=0)
    np.testing.assert_allclose(actual.GetDirection(), expected.GetDirection(), atol=atol, rtol=0)


def rejection(path: Path, error_class: type = InputError) -> str:
    """Read a bad input; check it fails with one short human line naming the input; return the line."""
    with pytest.raises(error_class) as caught:
        read_ct(path)
    message = str(caught.value)
    assert type(caught.value) is error_class
    assert "\n" not in message and os.fspath(path) in message
    assert not re.search(r"itk|exception|traceback|\.cxx|\.hxx", message, re.IGNORECASE), message
    return message


# --- valid inputs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "compress", "atol"),
    [(".nii.gz", True, 1e-5), (".nii", False, 1e-5), (".nrrd", True, 1e-12), (".mha", False, 1e-12),
     (".mhd", False, 1e-12)],
)
def test_file_round_trip_keeps_geometry_values_and_type(tmp_path, suffix, compress, atol):
    image = ct_image()
    path = write(image, tmp_path / f"case{suffix}", compress=compress)
    loaded = read_ct(path)
    assert loaded.GetPixelID() == sitk.sitkInt16
    assert_same_geometry(loaded, image, atol=atol)  # NIfTI stores its geometry as float32
    np.testing.assert_array_equal(sitk.GetArrayFromImage(loaded), sitk.GetArrayFromImage(image))


def test_float_ct_keeps_its_pixel_type(tmp_path):
    image = sitk.Cast(ct_image(), sitk.sitkFloat32) + 0.25
    loaded = read_ct(write(image, tmp_path / "f.nrrd"))
    assert loaded.GetPixelID() == sitk.sitkFloat32
    np.testing.assert_array_equal(sitk.GetArrayFromImage(loaded), sitk.GetArrayFromImage(image))


def test_slightly_non_orthonormal_direction_from_rounding_is_accepted(tmp_path):
    matrix = np.array(OBLIQUE).reshape(3, 3)
    matrix[0, 1] += 4e-4  # |R^T R - I| about 4e-4, like a float32 NIfTI round trip
    image = ct_image(direction=tuple(matrix.ravel()))
    loaded = read_ct(write(image, tmp_path / "rounded.mha"))
    np.testing.assert_allclose(loaded.GetDirection(), matrix.ravel(), atol=1e-12)


def test_4d_with_a_single_time_point_reads_as_3d(tmp_path):
    image = ct_image(direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
    volume = sitk.JoinSeries([image])
    loaded = read_ct(write(volume, tmp_path / "t1.nrrd"))
    assert_same_geometry(loaded, image, atol=1e-12)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(loaded), sitk.GetArrayFromImage(image))


@pytest.mark.parametrize("shuffle", [False, True])
def test_dicom_series_round_trip_in_slice_order(tmp_path, shuffle):
    image = ct_image()
    folder = write_dicom_series(image, tmp_path / "series", shuffle=shuffle)
    loaded = read_ct(folder)
    assert loaded.GetPixelID() == sitk.sitkInt16
    assert_same_geometry(loaded, image, atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(loaded), sitk.GetArrayFromImage(image))


def test_dicom_series_stored_against_the_slice_normal_keeps_its_physical_content(tmp_path):
    # A left-handed grid: slice k+1 lies *below* slice k along row x column, so the reader must reverse it.
    image = ct_image(direction=(1, 0, 0, 0, 1, 0, 0, 0, -1))
    loaded = read_ct(write_dicom_series(image, tmp_path / "feet_first"))
    np.testing.assert_allclose(loaded.GetDirection(), (1, 0, 0, 0, 1, 0, 0, 0, 1), atol=1e-9)
    np.testing.assert_allclose(loaded.GetOrigin(), image.TransformIndexToPhysicalPoint((0, 0, 11)), atol=1e-6)
    same_grid = sitk.Resample(loaded, image, sitk.Transform(), sitk.sitkNearestNeighbor, -2000)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(same_grid), sitk.GetArrayFromImage(image))


def test_dicom_folder_reads_the_series_with_most_slices(tmp_path):
    image = ct_image()
    folder = write_dicom_series(image, tmp_path / "mixed")
    scout = sitk.GetImageFromArray(ct_array((1, 18, 20)))
    scout.SetMetaData("0020|000e", SERIES_UID + ".99")
    scout.SetMetaData("0020|0032", "0\\0\\0")
    scout.SetMetaData("0020|0037", "1\\0\\0\\0\\1\\0")
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetFileName(os.fspath(folder / "scout.dcm"))
    writer.Execute(scout[:, :, 0])
    assert read_ct(folder).GetSize() == image.GetSize()


def test_dicom_folder_with_a_non_image_object_reads(tmp_path):
    # A DICOM file without Pixel Data (like a dose report or presentation state) is not part of the volume.
    image = ct_image()
    folder = write_dicom_series(image, tmp_path / "series")
    data = (folder / "IM0000.dcm").read_bytes()
    (folder / "report.dcm").write_bytes(data[: data.index(b"\xe0\x7f\x10\x00")])
    assert read_ct(folder).GetSize() == image.GetSize()


@pytest.mark.parametrize(
    "name", ["sub-tsexample_ct.nii.gz", "sub-verse006_ct.nii.gz", "sub-verse007_ct.nii.gz", "sub-verse012_ct.nii.gz"]
)
def test_real_ct_reads(name):
    path = REAL_CT / name.split("_")[0] / name
    if not path.exists():
        pytest.skip("real CT data not available")
    image = read_ct(path)
    assert image.GetDimension() == 3 and min(image.GetSize()) >= io.MIN_SLICES


def test_inputs_are_never_modified(tmp_path):
    good = write(ct_image(), tmp_path / "good.nii.gz", compress=True)
    bad = write(ct_image(np.zeros((12, 18, 20), np.int16)), tmp_path / "bad.nrrd")
    for path in (good, bad):
        os.chmod(path, 0o444)
        before = (path.read_bytes(), path.stat().st_mtime_ns)
        try:
            read_ct(path)
        except InputError:
            pass
        assert (path.read_bytes(), path.stat().st_mtime_ns) == before


@pytest.mark.parametrize(
    ("path", "stem"),
    [("a/case.nii.gz", "case"), ("case.NII.GZ", "case"), ("x.y.nii", "x.y"), ("c.nrrd", "c"), ("c.mha", "c"),
     ("c.mhd", "c"), ("c.tar", "c.tar")],
)
def test_output_stem(path, stem):
    assert output_stem(path) == stem


def test_output_stem_of_dicom_folder(tmp_path):
    (tmp_path / "CT.1.2").mkdir()
    assert output_stem(tmp_path / "CT.1.2") == "CT.1.2"
    assert output_stem(os.fspath(tmp_path / "CT.1.2") + os.sep) == "CT.1.2"


# --- memory ------------------------------------------------------------------------------------------------


def test_estimate_memory_bytes_counts_input_and_float32_copies():
    image = sitk.Image([10, 10, 10], sitk.sitkInt16)
    expected = 1000 * 2 + io.PIPELINE_FLOAT32_COPIES * 1000 * 4
    assert estimate_memory_bytes(image) == expected
    assert estimate_memory_bytes(ImageHeader.from_image(image)) == expected


def test_available_memory_honours_override(monkeypatch):
    monkeypatch.setenv(io.MEMORY_LIMIT_ENV, "12345")
    assert io.available_memory_bytes() == 12345
    monkeypatch.delenv(io.MEMORY_LIMIT_ENV)
    assert io.available_memory_bytes() > 0


def test_too_big_volume_is_refused_before_its_pixels_are_read(tmp_path, monkeypatch):
    # A header announcing 4096^3 voxels with no pixel data: reading the pixels would fail as truncated,
    # so ResourceLimitError proves the decision was made from the header alone.
    path = tmp_path / "huge.nrrd"
    path.write_bytes(
        b"NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\nsizes: 4096 4096 4096\n"
        b"space directions: (1,0,0) (0,1,0) (0,0,1)\nkinds: domain domain domain\nendian: little\n"
        b"encoding: raw\nspace origin: (0,0,0)\n\n"
    )
    monkeypatch.setenv(io.MEMORY_LIMIT_ENV, str(8 * 2**30))
    assert "GiB" in rejection(path, ResourceLimitError)


def test_memory_limit_applies_to_dicom_series(tmp_path, monkeypatch):
    folder = write_dicom_series(ct_image(), tmp_path / "series")
    monkeypatch.setenv(io.MEMORY_LIMIT_ENV, str(estimate_memory_bytes(ct_image()) - 1))
    rejection(folder, ResourceLimitError)
    monkeypatch.setenv(io.MEMORY_LIMIT_ENV, str(estimate_memory_bytes(ct_image())))
    read_ct(folder)


# --- rejected inputs ---------------------------------------------------------------------------------------


def patch_text_header(path: Path, pattern: bytes, replacement: bytes) -> Path:
    data = path.read_bytes()
    patched, count = re.subn(pattern, replacement, data, count=1)
    assert count == 1
    path.write_bytes(patched)
    return path


def patch_nifti(path: Path, offset: int, fmt: str, *values) -> Path:
    data = bytearray(path.read_bytes())
    data[offset : offset + struct.calcsize(fmt)] = struct.pack(fmt, *values)
    path.write_bytes(bytes(data))
    return path


def test_missing_path(tmp_path):
    assert "no such file" in rejection(tmp_path / "nothing.nii.gz")


def test_folder_without_dicom(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "sub").mkdir()
    assert "no DICOM series" in rejection(tmp_path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.nii.gz"
    path.touch()
    assert "empty" in rejection(path)


@pytest.mark.parametrize("name", ["photo.png", "volume.vtk", "noextension"])
def test_unsupported_format(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    assert "unsupported file type" in rejection(path)


def test_single_dicom_file_asks_for_the_folder(tmp_path):
    folder = write_dicom_series(ct_image(), tmp_path / "series")
    assert "folder" in rejection(next(folder.glob("*.dcm")))


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_garbage_bytes(tmp_path, suffix):
    path = tmp_path / f"garbage{suffix}"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    assert "corrupt" in rejection(path)


@pytest.mark.parametrize(("suffix", "compress"), [(".nii.gz", True), (".nii", False), (".nrrd", False),
                                                  (".nrrd", True), (".mha", False), (".mha", True)])
def test_truncated_file(tmp_path, suffix, compress):
    path = write(ct_image(), tmp_path / f"cut{suffix}", compress=compress)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 3 // 4])
    assert "truncated" in rejection(path)


@pytest.mark.parametrize("index", [5, -1])
def test_truncated_dicom_slice(tmp_path, index):
    # GDCM drops unreadable files from the series; the last slice would vanish without this check.
    folder = write_dicom_series(ct_image(), tmp_path / "series")
    victim = sorted(folder.glob("*.dcm"))[index]
    victim.write_bytes(victim.read_bytes()[:-200])
    assert f"{victim.name} is corrupt" in rejection(folder)


def test_2d_image(tmp_path):
    path = write(sitk.GetImageFromArray(ct_array((1, 18, 20))[0]), tmp_path / "slice.nrrd")
    assert "2D image" in rejection(path)


@pytest.mark.parametrize(("depth", "words"), [(1, "single slice"), (io.MIN_SLICES - 1, "only 7 slices")])
def test_too_few_slices(tmp_path, depth, words):
    path = write(ct_image(ct_array((depth, 18, 20))), tmp_path / "thin.nii.gz")
    assert words in rejection(path)


def test_too_few_dicom_slices(tmp_path):
    folder = write_dicom_series(ct_image(ct_array((3, 18, 20))), tmp_path / "series")
    assert "only 3 slices" in rejection(folder)


def test_zero_size_volume(tmp_path):
    path = tmp_path / "zero.nrrd"
    path.write_bytes(
        b"NRRD0004\ntype: short\ndimension: 3\nsizes: 20 0 12\nspacings: 1 1 1\nendian: little\nencoding: raw\n\n"
    )
    message = rejection(path)
    assert "empty" in message or "corrupt" in message


def test_4d_time_series(tmp_path):
    volume = sitk.JoinSeries([ct_image(direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))] * 3)
    assert "4D image" in rejection(write(volume, tmp_path / "t3.nii.gz"))


def test_rgb_image(tmp_path):
    rgb = sitk.GetImageFromArray(np.zeros((12, 18, 20, 3), np.uint8), isVector=True)
    assert "multi-component" in rejection(write(rgb, tmp_path / "rgb.nrrd"))


def test_uint8_screenshot(tmp_path):
    image = sitk.GetImageFromArray((ct_array() // 8 + 128).clip(0, 255).astype(np.uint8))
    assert "8-bit" in rejection(write(image, tmp_path / "shot.nii.gz"))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf(tmp_path, bad):
    array = ct_array().astype(np.float32)
    array[5, 9, 10] = bad
    assert "NaN or infinite" in rejection(write(ct_image(array), tmp_path / "nan.mha"))


def test_constant_image(tmp_path):
    array = np.full((12, 18, 20), -1000, np.int16)
    assert "same value (-1000)" in rejection(write(ct_image(array), tmp_path / "flat.nrrd"))


def test_normalised_image(tmp_path):
    array = (ct_array().astype(np.float32) + 1000) / 1700
    assert "normalised" in rejection(write(ct_image(array), tmp_path / "norm.nii.gz"))


def test_mr_like_image(tmp_path):
    array = np.abs(ct_array(air=False)).astype(np.uint16) * 3  # positive values, bright "fat" up to 2100
    assert "no fat or air" in rejection(write(ct_image(array), tmp_path / "t1w.nii.gz"))


def test_ct_stored_without_rescale_intercept(tmp_path):
    array = (ct_array() + 1024).astype(np.uint16)
    assert "no fat or air" in rejection(write(ct_image(array), tmp_path / "raw.nrrd"))


def test_tight_crop_inside_the_body_without_air_is_accepted(tmp_path):
    array = ct_array(air=False)  # soft tissue and fat around the bone, no air: a spine reconstruction
    assert read_ct(write(ct_image(array), tmp_path / "tight.nii.gz")).GetSize() == array.shape[::-1]


def test_no_bone(tmp_path):
    assert "no bone" in rejection(write(ct_image(ct_array(bone=False)), tmp_path / "soft.nii.gz"))


def test_dicom_mr_series(tmp_path):
    folder = write_dicom_series(ct_image(), tmp_path / "series", modality="MR")
    assert "is MR, not CT" in rejection(folder)


@pytest.mark.parametrize("spacing", [(25.0, 1.0, 1.0), (0.05, 1.0, 1.0), (1.0, 1.0, 20.5)])
def test_spacing_out_of_range(tmp_path, spacing):
    path = write(ct_image(spacing=spacing), tmp_path / "s.nrrd")
    assert "outside the usable range" in rejection(path)


def test_zero_spacing_nrrd(tmp_path):
    path = write(ct_image(direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)), tmp_path / "s0.nrrd")
    patch_text_header(path, rb"space directions: [^\n]*", b"space directions: (0,0,0) (0,0.9,0) (0,0,2.5)")
    assert "zero, negative" in rejection(path)


def test_negative_spacing_mha(tmp_path):
    path = write(ct_image(), tmp_path / "neg.mha")
    patch_text_header(path, rb"ElementSpacing = [^\n]*", b"ElementSpacing = -0.8 0.9 2.5")
    assert "zero, negative" in rejection(path)


@pytest.mark.parametrize("pixdim", [0.0, -0.8])
def test_bad_nifti_pixdim(tmp_path, pixdim):
    path = patch_nifti(write(ct_image(), tmp_path / "p.nii"), 80, "<f", pixdim)  # pixdim[1]
    assert "zero, negative" in rejection(path)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_sheared_direction(tmp_path, suffix):
    image = ct_image()
    image.SetDirection((1, 0.3, 0, 0, 1, 0, 0, 0, 1))
    assert "not orthogonal" in rejection(write(image, tmp_path / f"shear{suffix}"))


def test_sheared_nifti_sform(tmp_path):
    path = write(ct_image(direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)), tmp_path / "shear.nii")
    patch_nifti(path, 252, "<hh", 0, 1)  # qform_code 0, sform_code 1
    patch_nifti(path, 280, "<12f", -0.8, 0.3, 0, 1, 0, -0.9, 0, 2, 0, 0, 2.5, 3)
    assert "not orthogonal" in rejection(path)


def test_metaimage_header_that_crashes_itk(tmp_path):
    path = patch_text_header(write(ct_image(), tmp_path / "ndims.mha"), rb"NDims = 3", b"NDims = 1e308")
    assert "header is corrupt" in rejection(path)


def test_nifti_with_infinite_sform_that_hangs_itk(tmp_path):
    path = patch_nifti(write(ct_image(), tmp_path / "inf.nii"), 308, "<f", float("inf"))  # srow_y[3]
    assert "not finite" in rejection(path)


def test_gantry_tilted_dicom(tmp_path):
    folder = write_dicom_series(ct_image(), tmp_path / "tilted", tilt_mm=0.4)
    assert "gantry-tilted" in rejection(folder)


def test_dicom_with_a_missing_slice(tmp_path):
    folder = write_dicom_series(ct_image(), tmp_path / "gap", skip=(6,))
    assert "missing or extra slices" in rejection(folder)


def test_dicom_with_duplicate_positions(tmp_path):
    folder = write_dicom_series(ct_image(), tmp_path / "dup", duplicate=4)
    assert "1 DICOM slices repeat the position" in rejection(folder)


# --- quietness ---------------------------------------------------------------------------------------------


def test_reading_prints_nothing_and_restores_itk_warnings(tmp_path, capfd):
    noisy = write(ct_image(), tmp_path / "noisy.mha")
    noisy.write_bytes(noisy.read_bytes()[:-500])  # MetaIO prints its complaint straight to stderr
    sform = write(ct_image(direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)), tmp_path / "scales.nii")
    patch_nifti(sform, 280, "<12f", -1.6, 0, 0, 1, 0, -0.9, 0, 2, 0, 0, 2.5, 3)  # "unexpected scales" warning
    tilted = write_dicom_series(ct_image(), tmp_path / "tilted", tilt_mm=0.4)
    for path in (noisy, sform, tilted):
        try:
            read_ct(path)
        except InputError:
            pass
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""
    assert sitk.ProcessObject.GetGlobalWarningDisplay()
