"""The lumbarseg command end to end: bad inputs fail cleanly, a phantom is segmented on its exact grid."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from LumbarSegLib import __version__
from LumbarSegLib.labels import LUMBAR_VALUES
from LumbarSegLib.metrics import per_level_metrics
from LumbarSegLib.phantom import make_phantom

ROOT = Path(__file__).resolve().parents[1]


def lumbarseg(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "LumbarSegLib", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, fragment: str) -> None:
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("lumbarseg: error: ") and fragment in lines[0], lines[0]
    assert "Traceback" not in result.stderr


def write(image: sitk.Image, path: Path) -> Path:
    sitk.WriteImage(image, str(path))
    return path


def test_version():
    result = lumbarseg("--version")
    assert result.returncode == 0 and __version__ in result.stdout


@pytest.mark.parametrize("preset, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_openmp_threads_yield_under_load_unless_the_user_chose(monkeypatch, preset, expected):
    from LumbarSegLib import cli

    if preset is None:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    else:
        monkeypatch.setenv("OMP_WAIT_POLICY", preset)
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert os.environ["OMP_WAIT_POLICY"] == expected


def test_usage_error_exits_2():
    assert lumbarseg("segment").returncode == 2


def test_evaluate_refuses_a_missing_candidate_model_in_one_line(tmp_path):
    result = lumbarseg("evaluate", "--phantoms", "1", "--xunet", str(tmp_path / "none.pt"), "-o", str(tmp_path / "e"))
    assert_one_line_error(result, 7, "none.pt")


@pytest.mark.parametrize(
    "make, code, fragment",
    [
        (lambda d: d / "missing.nii.gz", 3, "missing.nii.gz"),
        (lambda d: (d / "broken.nii.gz").write_bytes(b"\x1f\x8b garbage") and d / "broken.nii.gz", 3, "broken"),
        (lambda d: write(sitk.Image([64, 64], sitk.sitkInt16), d / "flat.nrrd"), 3, "flat.nrrd"),
        (lambda d: write(sitk.GetImageFromArray(np.full((20, 30, 30), np.nan, np.float32)), d / "nan.nii.gz"), 3,
         "nan.nii.gz"),
        (lambda d: write(sitk.GetImageFromArray(np.random.default_rng(0).uniform(0, 1, (20, 30, 30))
                                                .astype(np.float32)), d / "unit.mha"), 3, "unit.mha"),
    ],
    ids=["missing", "corrupt", "2d", "nan", "normalised"],
)
def test_bad_input_one_line_and_no_output(tmp_path, make, code, fragment):
    path = make(tmp_path)
    out = tmp_path / "out"
    result = lumbarseg("segment", str(path), "-o", str(out))
    assert_one_line_error(result, code, fragment)
    assert not out.exists() or list(out.iterdir()) == []


def test_scan_without_spine_is_refused(tmp_path):
    """Soft tissue, air and a bone-like rod but no spine: the localizer must not invent one."""
    array = np.full((60, 80, 80), -1000, np.int16)
    yy, xx = np.mgrid[:80, :80]
    body = (yy - 40) ** 2 / 35**2 + (xx - 40) ** 2 / 30**2 < 1
    array[:, body] = 40
    array[:, 60:64, 20:24] = 900  # a femur-like rod far from the midline
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((4.0, 4.0, 4.0))
    path = write(image, tmp_path / "legs.nii.gz")
    result = lumbarseg("segment", str(path), "-o", str(tmp_path / "out"))
    assert_one_line_error(result, 4, "lumbar")


@pytest.fixture(scope="module")
def phantom_run(tmp_path_factory):
    """One segmentation of an oblique, anisotropic lumbar phantom, shared by the tests below."""
    folder = tmp_path_factory.mktemp("cli")
    direction = sitk.VersorTransform((0.1, 0.05, 1.0), 0.25).GetMatrix()
    ct, truth, _ = make_phantom(7, kind="lumbar", spacing=(1.2, 0.9, 2.5), direction=direction)
    ct_path = write(ct, folder / "case.nii.gz")
    before = ct_path.read_bytes()
    result = lumbarseg("segment", str(ct_path), "-o", str(folder / "out"), "--progress", "machine",
                       "--mesh", "stl", "--preview", "--threads", "2")
    return folder, ct, truth, result, before


def test_segment_writes_every_output_on_the_input_grid(phantom_run):
    folder, ct, truth, result, before = phantom_run
    assert result.returncode == 0, result.stderr
    out = folder / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "case.seg.nrrd", "case_meshes", "case_preview.png", "case_report.json", "case_seg.nii.gz",
    ]
    labels = sitk.ReadImage(str(out / "case_seg.nii.gz"))
    assert labels.GetPixelID() == sitk.sitkUInt8
    assert labels.GetSize() == ct.GetSize()
    np.testing.assert_allclose(labels.GetSpacing(), ct.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(labels.GetOrigin(), ct.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(labels.GetDirection(), ct.GetDirection(), atol=1e-6)
    assert (folder / "case.nii.gz").read_bytes() == before


def test_segment_progress_lines_are_machine_readable(phantom_run):
    *_, result, _ = phantom_run
    fractions = [float(line.split()[1]) for line in result.stdout.splitlines() if line.startswith("PROGRESS ")]
    assert fractions[-1] == 1.0 and fractions == sorted(fractions) and len(fractions) > 5


def test_segment_matches_phantom_truth(phantom_run):
    folder, ct, truth, result, _ = phantom_run
    labels = sitk.ReadImage(str(folder / "out" / "case_seg.nii.gz"))
    scores = per_level_metrics(labels, truth)["levels"]
    present = [name for name in ("L1", "L2", "L3", "L4", "L5") if name in scores]
    assert present
    for name in present:
        assert scores[name]["identified"], (name, scores[name])
        # A regression floor below what the shipped model measures here (0.84-0.93 per level); see docs/MODEL_CARD.md.
        assert scores[name]["dice"] > 0.75, (name, scores[name])


def test_report_and_segmentation_file(phantom_run):
    import slicerio

    folder, *_ = phantom_run
    report = json.loads((folder / "out" / "case_report.json").read_text())
    assert set(report["timings_s"]) >= {"read", "localize", "segment", "restore", "write", "total"}
    for values in report["vertebrae"].values():
        assert values["volume_ml"] > 5 and len(values["centroid_ras_mm"]) == 3
    segmentation = slicerio.read_segmentation(str(folder / "out" / "case.seg.nrrd"))
    names = {segment["name"] for segment in segmentation["segments"]}
    assert names == set(report["vertebrae"])
    assert len(list((folder / "out" / "case_meshes").glob("*.stl"))) == len(names)


def test_existing_outputs_are_not_overwritten(phantom_run):
    folder, *_ = phantom_run
    report = folder / "out" / "case_report.json"
    before = report.read_bytes()
    result = lumbarseg("segment", str(folder / "case.nii.gz"), "-o", str(folder / "out"))
    assert_one_line_error(result, 6, "--overwrite")
    assert report.read_bytes() == before


def test_verse_values_only(phantom_run):
    folder, *_ = phantom_run
    values = set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "out" / "case_seg.nii.gz")))))
    assert values <= {0, *LUMBAR_VALUES, 25}


@pytest.mark.parametrize("stage", ["localize", "segment"])
def test_sigterm_mid_run_leaves_output_folder_as_it_was(tmp_path, stage):
    import signal
    import time

    ct, _, _ = make_phantom(3, kind="lumbar", spacing=(1.5, 1.5, 2.0))
    path = write(ct, tmp_path / "case.nii.gz")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user file")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-m", "LumbarSegLib", "segment", str(path), "-o", str(out),
                              "--progress", "machine", "--threads", "1"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    deadline = time.time() + 300
    for line in child.stdout:
        if line.startswith("PROGRESS") and line.split()[2] == stage or time.time() > deadline:
            break
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 130, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lumbarseg: error: cancelled"), stderr
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
