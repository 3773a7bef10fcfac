"""Tests of the evaluation harness (LumbarSegLib.evaluation) with synthetic VerSe-layout folders."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from LumbarSegLib.errors import CancelledError, NoSpineError
from LumbarSegLib.evaluation import (
    CaseResult,
    evaluate_cases,
    find_cases,
    summarize,
    to_markdown,
    write_evaluation,
)

REALCT = Path(__file__).resolve().parents[2] / "shared" / "data" / "realct"
L1, L2, L3, L4 = 20, 21, 22, 23


def write_image(array: np.ndarray, path: Path, *, spacing=(0.8, 0.8, 2.0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return path


def lumbar_truth(levels=(L1, L2, L3)) -> np.ndarray:
    """Blocks of 8 slices (16 mm) with 4-slice gaps, the first level most superior (+z)."""
    truth = np.zeros((48, 16, 16), dtype=np.uint8)
    for i, value in enumerate(levels):
        top = 44 - 12 * i
        truth[top - 8:top, 4:12, 4:12] = value
    return truth


@pytest.fixture
def verse_dir(tmp_path: Path) -> Path:
    """Two cases with truth (NIfTI and NRRD CTs), one CT without truth, one stray file."""
    root = tmp_path / "verse"
    ct = np.full((48, 16, 16), -1000, dtype=np.int16)
    write_image(ct, root / "rawdata/sub-a/sub-a_ct.nii.gz")
    write_image(lumbar_truth(), root / "derivatives/sub-a/sub-a_seg-vert_msk.nii.gz")
    write_image(ct, root / "rawdata/sub-b/sub-b_dir-ax_ct.nrrd")
    write_image(lumbar_truth((L3, L4)), root / "derivatives/sub-b/sub-b_dir-ax_seg-vert_msk.nii.gz")
    write_image(ct, root / "rawdata/sub-c/sub-c_ct.nii.gz")
    (root / "derivatives/sub-a/sub-a_seg-subreg_ctd.json").write_text("[]")
    return root


def truth_segmenter(cases):
    """A fake segment_fn returning the truth itself (legitimate: it tests the harness)."""
    truth_of = {ct: truth for _, ct, truth in cases}
    return lambda ct_path: (sitk.ReadImage(str(truth_of[ct_path])), {"flags": ["fake"]})


def swapping_segmenter(cases, a=L2, b=L3):
    """A fake segment_fn returning the truth with labels ``a`` and ``b`` swapped."""
    truth_of = {ct: truth for _, ct, truth in cases}

    def segment(ct_path):
        truth = sitk.ReadImage(str(truth_of[ct_path]))
        array = sitk.GetArrayFromImage(truth)
        swapped = array.copy()
        swapped[array == a], swapped[array == b] = b, a
        image = sitk.GetImageFromArray(swapped)
        image.CopyInformation(truth)
        return image, {}

    return segment


def test_find_cases_pairs_ct_and_truth_and_skips_cases_without_truth(verse_dir, caplog):
    with caplog.at_level(logging.WARNING):
        cases = find_cases(verse_dir)
    assert cases == [
        ("sub-a", verse_dir / "rawdata/sub-a/sub-a_ct.nii.gz",
         verse_dir / "derivatives/sub-a/sub-a_seg-vert_msk.nii.gz"),
        ("sub-b_dir-ax", verse_dir / "rawdata/sub-b/sub-b_dir-ax_ct.nrrd",
         verse_dir / "derivatives/sub-b/sub-b_dir-ax_seg-vert_msk.nii.gz"),
    ]
    assert "skipping sub-c" in caplog.text


def test_find_cases_rejects_a_folder_without_rawdata(tmp_path):
    with pytest.raises(Exception, match="no rawdata"):
        find_cases(tmp_path)


@pytest.mark.skipif(not REALCT.is_dir(), reason="real CT folder not available")
def test_find_cases_on_the_real_ct_folder():
    cases = find_cases(REALCT)
    assert [case for case, _, _ in cases] == ["sub-tsexample", "sub-verse006", "sub-verse007", "sub-verse012"]
    for case, ct_path, truth_path in cases:
        assert ct_path.name == f"{case}_ct.nii.gz" and truth_path.name == f"{case}_seg-vert_msk.nii.gz"


def test_truth_as_prediction_scores_perfectly(verse_dir):
    cases = find_cases(verse_dir)
    calls = []
    results = evaluate_cases(cases, truth_segmenter(cases), progress=lambda f, s: calls.append((f, s)))
    assert calls == [(0.0, "sub-a"), (0.5, "sub-b_dir-ax"), (1.0, "done")]
    assert [list(r.levels) for r in results] == [["L1", "L2", "L3"], ["L3", "L4"]]
    for result in results:
        assert result.error is None and result.flags == ["fake"] and result.false_positives == []
        assert all(m["dice"] == 1.0 and m["hd95"] == 0.0 and m["identified"] for m in result.levels.values())
    summary = summarize(results)
    assert summary["overall"]["n"] == 5
    assert summary["overall"]["dice_mean"] == 1.0
    assert summary["overall"]["identification_rate"] == 1.0
    assert summary["levels"]["L3"]["n"] == 2


def test_swapped_levels_fail_identification(verse_dir):
    cases = find_cases(verse_dir)
    results = evaluate_cases(cases, swapping_segmenter(cases))
    first, second = results
    assert {name: m["identified"] for name, m in first.levels.items()} == {"L1": True, "L2": False, "L3": False}
    assert first.levels["L2"]["dice"] == 0.0 and first.levels["L3"]["dice"] == 0.0
    assert first.levels["L2"]["centroid_distance"] == pytest.approx(12 * 2.0)
    # Case b has no L2 in its truth: its L3 became an L2 inside the labelled range.
    assert second.levels["L3"]["predicted"] is False
    assert second.false_positives == ["L2"]
    summary = summarize(results)
    assert summary["overall"]["identification_rate"] == pytest.approx(2 / 5)
    assert summary["overall"]["dice_mean"] == pytest.approx(2 / 5)
    assert summary["levels"]["L3"]["not_predicted"] == 1
    assert summary["false_positive_levels"] == 1


def test_a_failing_case_is_recorded_and_the_run_continues(verse_dir):
    cases = find_cases(verse_dir)
    segment_truth = truth_segmenter(cases)

    def segment(ct_path):
        if "sub-a" in ct_path.name:
            raise NoSpineError("no lumbar spine found")
        return segment_truth(ct_path)

    failed, ok = evaluate_cases(cases, segment)
    assert failed.error == "NoSpineError: no lumbar spine found"
    assert list(failed.levels) == ["L1", "L2", "L3"]
    assert not any(m["identified"] or m["predicted"] for m in failed.levels.values())
    assert ok.error is None and all(m["identified"] for m in ok.levels.values())
    summary = summarize([failed, ok])
    assert summary["failed_cases"] == 1
    assert summary["overall"]["identification_rate"] == pytest.approx(2 / 5)
    assert summary["overall"]["not_predicted"] == 3


def test_cancellation_stops_the_run(verse_dir):
    def cancel(ct_path):
        raise CancelledError("cancelled")

    with pytest.raises(CancelledError):
        evaluate_cases(find_cases(verse_dir), cancel)


def test_summary_of_hand_made_results_is_exact():
    def level(dice, hd95, identified, predicted=True):
        return {"dice": dice, "hd95": hd95, "assd": hd95 / 4, "centroid_distance": 1.0 if predicted else None,
                "predicted": predicted, "identified": identified}

    results = [
        CaseResult("x", {"L1": level(0.9, 2.0, True), "L2": level(0.8, 4.0, True)}, 10.0, []),
        CaseResult("y", {"L1": level(0.0, float("inf"), False, predicted=False), "L2": level(0.6, 6.0, False)},
                   20.0, [], false_positives=["L6"]),
    ]
    summary = summarize(results)
    assert summary["levels"]["L1"] == {
        "n": 2, "dice_mean": pytest.approx(0.45), "dice_median": pytest.approx(0.45), "hd95_mean": 2.0,
        "assd_mean": 0.5, "identification_rate": 0.5, "not_predicted": 1,
    }
    assert summary["overall"]["dice_mean"] == pytest.approx(2.3 / 4)
    assert summary["overall"]["dice_median"] == pytest.approx(0.7)
    assert summary["overall"]["hd95_mean"] == pytest.approx(4.0)
    assert summary["overall"]["identification_rate"] == 0.5
    assert summary["mean_seconds"] == 15.0
    assert summary["false_positive_levels"] == 1


def test_markdown_and_json_reports(verse_dir, tmp_path):
    cases = find_cases(verse_dir)
    results = evaluate_cases(cases, swapping_segmenter(cases))
    summary = summarize(results)
    markdown = to_markdown(results, summary)
    assert "| sub-a | L2 | 0.000 | " in markdown
    assert "| sub-b_dir-ax | L3 | 0.000 | — | — | — | no (missing) |" in markdown
    assert "| **all** | 5 | 0.400 | 0.000 |" in markdown
    assert "false-positive levels: L2" in markdown

    md_path, json_path = write_evaluation(results, summary, tmp_path / "out")
    assert md_path.read_text(encoding="utf-8") == markdown
    document = json.loads(json_path.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert document["summary"]["overall"]["n"] == 5
    level = document["cases"][1]["levels"]["L3"]
    assert level["hd95"] is None and level["centroid_distance"] is None and level["identified"] is False
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["evaluation.json", "evaluation.md"]
