"""Fuzz the reader: malformed files must give a valid image or InputError/ResourceLimitError, nothing else.

Seeded random mutations (byte flips, truncations, corrupted header fields) of small valid NIfTI, NRRD,
MetaImage and DICOM inputs, plus a hypothesis search over NIfTI header fields.
"""

from __future__ import annotations

import gzip
import os
import random
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from LumbarSegLib import io
from LumbarSegLib.errors import InputError, ResourceLimitError
from LumbarSegLib.io import read_ct

CASES_PER_FORMAT = 70
TEXT_VALUES = [b"0", b"-1", b"-0.0", b"nan", b"inf", b"1e308", b"99999999", b"2147483648", b"abc", b"", b"3 3",
               b"(0,0,0)", b"(nan,0,0) (0,1,0) (0,0,1)", b"1 0 0 0 1 0", b"MET_UCHAR", b"float", b"gzip", b"bzip2",
               b"\x00\xff", b"4", b"2", b"5 5 5 5"]
# NIfTI-1 header fields: (byte offset, struct format).
NIFTI_FIELDS = [(40 + 2 * i, "<h") for i in range(8)] + [(70, "<h"), (72, "<h")] + \
    [(76 + 4 * i, "<f") for i in range(8)] + [(108, "<f"), (112, "<f"), (116, "<f"), (252, "<h"), (254, "<h")] + \
    [(256 + 4 * i, "<f") for i in range(6)] + [(280 + 4 * i, "<f") for i in range(12)] + [(344, "<4s")]


def ct_volume() -> sitk.Image:
    rng = np.random.default_rng(0)
    array = rng.integers(-1000, 1200, size=(10, 14, 16)).astype(np.int16)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 0.9, 2.0))
    image.SetOrigin((5.0, -3.0, 40.0))
    image.SetDirection(sitk.VersorTransform((0.1, 0.2, 0.3), 0.3).GetMatrix())
    return image


@pytest.fixture(autouse=True)
def small_memory(monkeypatch):
    """Keep the memory check tight so mutated sizes are refused instead of allocated."""
    monkeypatch.setenv(io.MEMORY_LIMIT_ENV, str(64 * 2**20))


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("originals")
    image = ct_volume()
    made = {}
    for name, compress in [("a.nii", False), ("a.nii.gz", True), ("a.nrrd", False), ("z.nrrd", True),
                           ("a.mha", False), ("z.mha", True)]:
        sitk.WriteImage(image, os.fspath(folder / name), useCompression=compress)
        made[name] = (folder / name).read_bytes()
    return made


def check_reads_cleanly(path: Path) -> str:
    """The contract under test; returns which outcome happened."""
    try:
        image = read_ct(path)
    except (InputError, ResourceLimitError) as error:
        message = str(error)
        assert message and "\n" not in message
        return type(error).__name__
    assert isinstance(image, sitk.Image) and image.GetDimension() == 3
    return "valid"


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    kind = rng.choice(["flip", "flip-header", "truncate", "truncate-header", "insert", "zero-run"])
    mutable = bytearray(data)
    if kind.startswith("flip"):
        limit = min(len(data), 400) if kind == "flip-header" else len(data)
        for _ in range(rng.randint(1, 8)):
            mutable[rng.randrange(limit)] = rng.randrange(256)
    elif kind == "truncate":
        del mutable[rng.randrange(1, len(data)):]
    elif kind == "truncate-header":
        del mutable[rng.randrange(1, min(len(data), 400)):]
    elif kind == "insert":
        at = rng.randrange(len(data))
        mutable[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    else:
        at = rng.randrange(len(data))
        mutable[at : at + rng.randint(1, 64)] = bytes(64)
    return bytes(mutable)


def mutate_text_header(data: bytes, rng: random.Random) -> bytes:
    """Replace the value of one header line of an NRRD or MetaImage file."""
    end = data.find(b"\n\n") + 1 if data.startswith(b"NRRD") else data.find(b"ElementDataFile")
    lines = data[:end].split(b"\n")
    index = rng.randrange(1, len(lines)) if len(lines) > 1 else 0
    key, sep, _ = lines[index].partition(b": " if data.startswith(b"NRRD") else b" = ")
    if sep:
        lines[index] = key + sep + rng.choice(TEXT_VALUES)
    return b"\n".join(lines) + data[end:]


def mutate_nifti_header(data: bytes, rng: random.Random) -> bytes:
    offset, fmt = rng.choice(NIFTI_FIELDS)
    if fmt == "<h":
        value = rng.choice([0, 1, -1, 2, 3, 4, 7, 8, 255, 32767, -32768, rng.randint(-5, 300)])
    elif fmt == "<f":
        value = rng.choice([0.0, -1.0, float("nan"), float("inf"), 1e30, -1e-30, 352.0, rng.uniform(-50, 50)])
    else:
        value = rng.choice([b"n+1\x00", b"ni1\x00", b"n+2\x00", b"xxxx"])
    mutable = bytearray(data)
    mutable[offset : offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
    return bytes(mutable)


@pytest.mark.parametrize("name", ["a.nii", "a.nii.gz", "a.nrrd", "z.nrrd", "a.mha", "z.mha"])
def test_mutated_files_fail_cleanly(tmp_path, originals, name):
    rng = random.Random(f"lumbarseg-{name}")
    outcomes = []
    for case in range(CASES_PER_FORMAT):
        data = originals[name]
        if name == "a.nii" and case % 2:
            data = mutate_nifti_header(data, rng)
        elif name.endswith((".nrrd", ".mha")) and case % 2:
            data = mutate_text_header(data, rng)
        else:
            data = mutate_bytes(data, rng)
        path = tmp_path / f"{case}_{name}"
        path.write_bytes(data)
        outcomes.append(check_reads_cleanly(path))
        path.unlink()
    assert outcomes.count("InputError") > CASES_PER_FORMAT // 4  # the mutations really do break files


def test_mutated_gzip_nifti_headers_fail_cleanly(tmp_path, originals):
    raw = gzip.decompress(originals["a.nii.gz"])
    rng = random.Random("lumbarseg-nii-gz-header")
    for case in range(CASES_PER_FORMAT):
        path = tmp_path / f"{case}.nii.gz"
        path.write_bytes(gzip.compress(mutate_nifti_header(raw, rng), compresslevel=1))
        check_reads_cleanly(path)


def test_mutated_dicom_series_fail_cleanly(tmp_path):
    image = ct_volume()
    series = tmp_path / "series"
    series.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = image.GetDirection()
    for k in range(image.GetDepth()):
        slice_image = image[:, :, k]
        slice_image.SetMetaData("0008|0060", "CT")
        slice_image.SetMetaData("0020|000e", "1.2.826.0.1.3680043.2.1125.9.1")
        slice_image.SetMetaData("0020|0037", "\\".join(str(direction[i]) for i in (0, 3, 6, 1, 4, 7)))
        slice_image.SetMetaData("0020|0032", "\\".join(map(str, image.TransformIndexToPhysicalPoint((0, 0, k)))))
        writer.SetFileName(os.fspath(series / f"{k:03d}.dcm"))
        writer.Execute(slice_image)
    assert check_reads_cleanly(series) == "valid"
    rng = random.Random("lumbarseg-dicom")
    files = sorted(p.name for p in series.iterdir())
    for case in range(40):
        copy = tmp_path / f"case{case}"
        shutil.copytree(series, copy)
        for victim in rng.sample(files, rng.randint(1, 2)):
            target = copy / victim
            target.write_bytes(mutate_bytes(target.read_bytes(), rng))
        check_reads_cleanly(copy)
        shutil.rmtree(copy)


def nifti_field_value(field: tuple[int, str]) -> st.SearchStrategy:
    value = st.integers(-32768, 32767) if field[1] == "<h" else st.floats(width=32)
    return st.tuples(st.just(field), value)


@settings(max_examples=80, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=st.lists(st.sampled_from(NIFTI_FIELDS[:-1]).flatmap(nifti_field_value), min_size=1, max_size=4))
def test_hypothesis_nifti_header_fields(tmp_path, originals, fields):
    data = bytearray(originals["a.nii"])
    for (offset, fmt), value in fields:
        struct.pack_into(fmt, data, offset, value)
    path = tmp_path / "h.nii"
    path.write_bytes(bytes(data))
    check_reads_cleanly(path)
