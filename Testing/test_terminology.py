"""The Slicer terminology context and segment entries, generated from labels.py."""

from __future__ import annotations

import json
from pathlib import Path

from LumbarSegLib import labels as lbl
from LumbarSegLib import terminology

REPO = Path(__file__).resolve().parents[1]


def test_terminology_context_matches_labels():
    context = terminology.terminology_context()
    assert context["SegmentationCategoryTypeContextName"] == terminology.TERMINOLOGY_CONTEXT_NAME
    (category,) = context["SegmentationCodes"]["Category"]
    assert (category["CodingSchemeDesignator"], category["CodeValue"]) == ("SCT", lbl.CATEGORY.value)
    types = {t["3dSlicerLabel"]: t for t in category["Type"]}
    assert list(types) == ["L1", "L2", "L3", "L4", "L5", "L6", "sacrum"]
    for level, entry in types.items():
        assert entry["CodeValue"] == lbl.SNOMED[level].value
        assert entry["CodeMeaning"] == lbl.SNOMED[level].meaning
        assert entry["3dSlicerIntegerLabel"] == lbl.VERSE_VALUE[level]
        rgb = entry["recommendedDisplayRGBValue"]
        assert all(isinstance(c, int) and 0 <= c <= 255 for c in rgb)
        assert all(abs(c / 255 - f) <= 0.5 / 255 for c, f in zip(rgb, lbl.COLORS[level]))
    assert types["L1"]["CodeValue"] == "66794005" and types["L5"]["CodeValue"] == "49668003"
    codes = [(t["CodingSchemeDesignator"], t["CodeValue"]) for t in category["Type"]]
    assert len(set(codes)) == len(codes), "a terminology type code may appear only once"


def test_committed_term_json_is_generated_from_labels():
    path = REPO / "Resources" / "Terminology" / "LumbarSeg.term.json"
    assert json.loads(path.read_text(encoding="utf-8")) == terminology.terminology_context(), (
        "regenerate with: python -c \"from LumbarSegLib.terminology import write_terminology_context; "
        "write_terminology_context('Resources/Terminology/LumbarSeg.term.json')\"")


def test_write_terminology_context_round_trip(tmp_path):
    path = tmp_path / "t.term.json"
    terminology.write_terminology_context(path)
    assert json.loads(path.read_text(encoding="utf-8")) == terminology.terminology_context()


def test_terminology_entry_format():
    entry = terminology.terminology_entry("L3")
    parts = entry.split("~")
    assert len(parts) == 7
    assert parts[0] == terminology.TERMINOLOGY_CONTEXT_NAME
    assert parts[1] == "SCT^123037004^Anatomical Structure"
    assert parts[2] == "SCT^36470004^L3 vertebra"
    assert parts[3] == "^^" and parts[4] == terminology.ANATOMIC_CONTEXT_NAME
    assert terminology.terminology_entry("L6").split("~")[2] == "SCT^51282000^Vertebra"
