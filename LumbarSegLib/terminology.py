"""Slicer terminology for the segments: the LumbarSeg context (``.term.json``) and entries.

Codes, colours and label values come from ``labels.py``. Slicer stores a
segment's terminology as ``context~category~type~typeModifier~anatomicContext~
region~regionModifier``, each code written ``scheme^value^meaning``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Union

from LumbarSegLib import labels as lbl

TERMINOLOGY_CONTEXT_NAME = "Segmentation category and type - LumbarSeg"
ANATOMIC_CONTEXT_NAME = "Anatomic codes - DICOM master list"
TERMINOLOGY_SCHEMA = "https://raw.githubusercontent.com/qiicr/dcmqi/master/doc/schemas/segment-context-schema.json#"
TERMINOLOGY_LEVELS: tuple[str, ...] = ("L1", "L2", "L3", "L4", "L5", "L6", "sacrum")


def _code_fields(code: lbl.Terminology) -> dict:
    fields = {"CodingSchemeDesignator": code.scheme, "CodeValue": code.value, "CodeMeaning": code.meaning}
    if code.scheme == "SCT":
        fields["SNOMEDCTConceptID"] = code.value
    return fields


def terminology_context() -> dict:
    """Slicer terminology context (``.term.json`` content) for L1..L6 and the sacrum.

    Codes, colours and label values come from ``labels.py``; the Slicer label is the
    segment name the pipeline writes.
    """
    types = [
        {
            **_code_fields(lbl.SNOMED[level]),
            "3dSlicerLabel": level,
            "3dSlicerIntegerLabel": lbl.VERSE_VALUE[level],
            "recommendedDisplayRGBValue": [round(channel * 255) for channel in lbl.COLORS[level]],
        }
        for level in TERMINOLOGY_LEVELS
    ]
    category = {**_code_fields(lbl.CATEGORY), "showAnatomy": False, "Type": types}
    return {
        "SegmentationCategoryTypeContextName": TERMINOLOGY_CONTEXT_NAME,
        "@schema": TERMINOLOGY_SCHEMA,
        "SegmentationCodes": {"Category": [category]},
    }


def terminology_entry(level: str) -> str:
    """Slicer's serialized terminology entry of ``level`` in the LumbarSeg context.

    Format: ``context~category~type~typeModifier~anatomicContext~region~regionModifier``,
    each code written ``scheme^value^meaning``.
    """
    return "~".join((TERMINOLOGY_CONTEXT_NAME, lbl.CATEGORY.code(), lbl.SNOMED[level].code(), "^^",
                     ANATOMIC_CONTEXT_NAME, "^^", "^^"))


def write_terminology_context(path: Union[str, Path]) -> None:
    """Write :func:`terminology_context` as the ``.term.json`` file Slicer loads."""
    Path(path).write_text(json.dumps(terminology_context(), indent=2) + "\n", encoding="utf-8")
