"""Held-out phantom sets for evaluation, and the transitional-anatomy summary."""

from __future__ import annotations

import json

import SimpleITK as sitk

from LumbarSegLib.evaluation import CaseResult, find_cases, transitional_summary
from LumbarSegLib.phantom.dataset import VARIANTS_FILE, write_phantom_cases


def test_phantom_set_in_verse_layout(tmp_path):
    variants = write_phantom_cases(tmp_path, count=2)
    assert variants == {"sub-phantom000": "normal", "sub-phantom001": "L6"}
    assert json.loads((tmp_path / VARIANTS_FILE).read_text()) == variants
    cases = find_cases(tmp_path)
    assert [case for case, _, _ in cases] == list(variants)
    for _, ct_path, truth_path in cases:
        ct, truth = sitk.ReadImage(str(ct_path)), sitk.ReadImage(str(truth_path))
        assert ct.GetSize() == truth.GetSize() and ct.GetDirection() == truth.GetDirection()
    l6_truth = sitk.GetArrayFromImage(sitk.ReadImage(str(cases[1][2])))
    assert (l6_truth == 25).any()


def test_transitional_summary_counts_flags_by_variant():
    def case(name: str, *flags: str) -> CaseResult:
        return CaseResult(case=name, levels={}, seconds=0.0, flags=list(flags))

    results = [
        case("a", "transitional_anatomy: six lumbar-type vertebrae"),
        case("b"),
        case("c", "transitional_anatomy: six lumbar-type vertebrae", "low_confidence: L2"),
        case("d", "low_confidence: L5"),
        case("e", "low_confidence: L5"),
        case("f", "level_spans_two_vertebrae: L4 covers two vertebral bodies"),
        case("g"),
    ]
    variants = {"a": "L6", "b": "L6", "c": "normal", "d": "T13", "e": "sacralized_L5", "f": "L6", "g": "normal"}
    assert transitional_summary(results, variants) == {
        "L6": {"cases": 3, "flagged": 2}, "T13": {"cases": 1, "flagged": 0},
        "normal": {"cases": 2, "flagged": 1}, "sacralized_L5": {"cases": 1, "flagged": 0},
    }
