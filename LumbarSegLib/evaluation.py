"""Evaluate a segmentation function on a VerSe/BIDS-layout folder: per-case metrics, summary, reports.

Layout: ``rawdata/<subject>/<case>_ct.<ext>`` with the truth in
``derivatives/<subject>/<case>_seg-vert_msk.<ext>`` (``<ext>`` one of
``.nii.gz .nii .nrrd .mha .mhd``).  Metrics come from ``metrics.per_level_metrics``.

Summary conventions: Dice and identification count every level present in the
truth (a level the prediction misses has Dice 0 and is not identified); HD95
and ASSD means are over the levels that were predicted (a missing level has no
finite distance) and the missing ones are counted in ``not_predicted``.  In
JSON, infinite or undefined distances are written as ``null``.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from .errors import CancelledError, InputError
from .labels import VERSE_VALUE
from .metrics import per_level_metrics
from .transitional import TRANSITIONAL_FINDINGS

LOG = logging.getLogger(__name__)
IMAGE_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
CT_SUFFIX = "_ct"
TRUTH_SUFFIX = "_seg-vert_msk"

SegmentFn = Callable[[Path], Tuple[sitk.Image, dict]]
ProgressFn = Callable[[float, str], None]


@dataclass
class CaseResult:
    """Metrics of one case: ``levels`` maps a level name ("L1") to its metrics dict."""

    case: str
    levels: dict[str, dict]
    seconds: float
    flags: list[str]
    false_positives: list[str] = field(default_factory=list)
    error: Optional[str] = None


def find_cases(data_dir: Path) -> list[tuple[str, Path, Path]]:
    """Return ``(case, ct_path, truth_path)`` for every CT with a truth mask, sorted by case.

    CTs without a truth mask are skipped with a logged warning.

    Raises:
        InputError: ``data_dir`` has no ``rawdata`` folder.
    """
    data_dir = Path(data_dir)
    rawdata = data_dir / "rawdata"
    if not rawdata.is_dir():
        raise InputError(f"{data_dir} is not a VerSe/BIDS folder: no rawdata/ in it")
    truths = {case: path for case, path in _images_with_suffix(data_dir / "derivatives", TRUTH_SUFFIX)}
    cases = []
    for case, ct_path in _images_with_suffix(rawdata, CT_SUFFIX):
        if case in truths:
            cases.append((case, ct_path, truths[case]))
        else:
            LOG.warning("skipping %s: no %s%s mask under derivatives/", case, case, TRUTH_SUFFIX)
    return sorted(cases)


def evaluate_cases(
    cases: Iterable[tuple[str, Path, Path]],
    segment_fn: SegmentFn,
    *,
    progress: Optional[ProgressFn] = None,
) -> list[CaseResult]:
    """Segment every case with ``segment_fn`` and compare it with its truth.

    ``segment_fn(ct_path)`` returns ``(label map on the input grid in VerSe
    values, report dict)``; the report's ``flags`` are kept.  An error in one
    case is recorded in that case's result (all its levels unidentified) and
    the run goes on; only a cancellation stops it.
    """
    cases = list(cases)
    results = []
    for index, (case, ct_path, truth_path) in enumerate(cases):
        if progress is not None:
            progress(index / len(cases), case)
        results.append(_evaluate_case(case, ct_path, truth_path, segment_fn))
    if progress is not None:
        progress(1.0, "done")
    return results


def summarize(results: Sequence[CaseResult]) -> dict:
    """Return Dice mean/median, mean HD95/ASSD and identification rate per level and overall."""
    by_level: dict[str, list[dict]] = {}
    for result in results:
        for name, metrics in result.levels.items():
            by_level.setdefault(name, []).append(metrics)
    ordered = sorted(by_level, key=VERSE_VALUE.__getitem__)
    return {
        "cases": len(results),
        "failed_cases": sum(result.error is not None for result in results),
        "false_positive_levels": sum(len(result.false_positives) for result in results),
        "mean_seconds": statistics.fmean([r.seconds for r in results]) if results else None,
        "levels": {name: _level_summary(by_level[name]) for name in ordered},
        "overall": _level_summary([m for name in ordered for m in by_level[name]]),
    }


def transitional_summary(results: Sequence[CaseResult], variants: dict[str, str]) -> dict[str, dict[str, int]]:
    """Per anatomical variant: how many cases, and in how many a transitional-anatomy finding was raised.

    Args:
        results: evaluated cases.
        variants: case -> anatomical variant (``normal``, ``L6``, ``sacralized_L5``, ...); on
            ``normal`` cases a flag is a false alarm.
    """
    summary: dict[str, dict[str, int]] = {}
    for result in results:
        if result.case not in variants:
            continue
        row = summary.setdefault(variants[result.case], {"cases": 0, "flagged": 0})
        row["cases"] += 1
        row["flagged"] += any(flag.startswith(TRANSITIONAL_FINDINGS) for flag in result.flags)
    return dict(sorted(summary.items()))


def to_markdown(results: Sequence[CaseResult], summary: dict) -> str:
    """Render a summary table and a per-case, per-level table as Markdown."""
    lines = [
        "# LumbarSeg evaluation",
        "",
        "## Summary",
        "",
        "| level | n | Dice mean | Dice median | HD95 mean (mm) | ASSD mean (mm) | identified | not predicted |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = list(summary["levels"].items()) + [("**all**", summary["overall"])]
    for name, stats in rows:
        lines.append(
            f"| {name} | {stats['n']} | {_number(stats['dice_mean'], 3)} | {_number(stats['dice_median'], 3)}"
            f" | {_number(stats['hd95_mean'], 2)} | {_number(stats['assd_mean'], 2)}"
            f" | {_percent(stats['identification_rate'])} | {stats['not_predicted']} |"
        )
    lines += [
        "",
        f"Cases: {summary['cases']} ({summary['failed_cases']} failed); "
        f"false-positive levels: {summary['false_positive_levels']}; "
        f"mean time per case: {_number(summary['mean_seconds'], 1)} s.",
        "HD95/ASSD means are over predicted levels; a level missing from the prediction counts as Dice 0, "
        "not identified. Identified: predicted centroid < 20 mm from the true one and no other vertebra closer.",
        "",
        *_transitional_lines(summary.get("transitional")),
        "## Per case",
        "",
        "| case | level | Dice | HD95 (mm) | ASSD (mm) | centroid error (mm) | identified |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for result in results:
        for name, metrics in result.levels.items():
            lines.append(
                f"| {result.case} | {name} | {_number(metrics['dice'], 3)} | {_number(metrics['hd95'], 2)}"
                f" | {_number(metrics['assd'], 2)} | {_number(metrics['centroid_distance'], 1)}"
                f" | {_identified(metrics)} |"
            )
    lines += ["", "## Notes per case", ""]
    lines += [_case_note(result) for result in results]
    return "\n".join(lines) + "\n"


def write_evaluation(results: Sequence[CaseResult], summary: dict, outdir: Path) -> tuple[Path, Path]:
    """Write ``evaluation.md`` and ``evaluation.json`` into ``outdir``; return their paths."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    document = {"summary": summary, "cases": [asdict(result) for result in results]}
    markdown_path = _write_atomically(outdir / "evaluation.md", to_markdown(results, summary))
    json_path = _write_atomically(
        outdir / "evaluation.json", json.dumps(_finite_or_none(document), indent=2, allow_nan=False) + "\n"
    )
    return markdown_path, json_path


def _images_with_suffix(root: Path, suffix: str) -> list[tuple[str, Path]]:
    """Return ``(case, path)`` for image files named ``<case><suffix><ext>`` anywhere under ``root``."""
    if not root.is_dir():
        return []
    found = []
    for path in sorted(root.rglob(f"*{suffix}.*")):
        for extension in IMAGE_EXTENSIONS:
            if path.is_file() and path.name.endswith(suffix + extension):
                found.append((path.name[: -len(suffix + extension)], path))
                break
    return found


def _evaluate_case(case: str, ct_path: Path, truth_path: Path, segment_fn: SegmentFn) -> CaseResult:
    try:
        truth = sitk.ReadImage(str(truth_path))
    except RuntimeError as error:
        LOG.warning("%s: cannot read the truth %s: %s", case, truth_path, error)
        return CaseResult(case=case, levels={}, seconds=0.0, flags=[], error=f"unreadable truth: {error}")
    start = time.perf_counter()
    try:
        prediction, report = segment_fn(ct_path)
        seconds = time.perf_counter() - start
        metrics = per_level_metrics(prediction, truth)
    except CancelledError:
        raise
    except Exception as error:  # noqa: BLE001 - one failed case must not end the evaluation
        LOG.warning("%s failed: %s", case, error)
        return _failed_case(case, truth, time.perf_counter() - start, f"{type(error).__name__}: {error}")
    return CaseResult(
        case=case,
        levels=metrics["levels"],
        seconds=seconds,
        flags=[_flag_text(flag) for flag in report.get("flags", [])],
        false_positives=metrics["false_positives"],
    )


def _failed_case(case: str, truth: sitk.Image, seconds: float, error: str) -> CaseResult:
    empty = sitk.Image(truth.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(truth)
    levels = per_level_metrics(empty, truth)["levels"]
    return CaseResult(case=case, levels=levels, seconds=seconds, flags=[], error=error)


def _flag_text(flag: object) -> str:
    if isinstance(flag, dict) and "message" in flag:
        return f"{flag['code']}: {flag['message']}" if "code" in flag else str(flag["message"])
    return str(flag)


def _level_summary(metrics: list[dict]) -> dict:
    dices = [m["dice"] for m in metrics]
    hd95s = [m["hd95"] for m in metrics if m["predicted"]]
    assds = [m["assd"] for m in metrics if m["predicted"]]
    return {
        "n": len(metrics),
        "dice_mean": statistics.fmean(dices) if dices else None,
        "dice_median": statistics.median(dices) if dices else None,
        "hd95_mean": statistics.fmean(hd95s) if hd95s else None,
        "assd_mean": statistics.fmean(assds) if assds else None,
        "identification_rate": sum(m["identified"] for m in metrics) / len(metrics) if metrics else None,
        "not_predicted": sum(not m["predicted"] for m in metrics),
    }


def _transitional_lines(transitional: Optional[dict]) -> list[str]:
    if not transitional:
        return []
    counts = "; ".join(f"{variant} {row['flagged']} of {row['cases']}" for variant, row in transitional.items())
    return [
        f"Transitional anatomy flagged ({', '.join(TRANSITIONAL_FINDINGS)}), by variant: {counts}"
        " (on normal spines a flag is a false alarm).",
        "",
    ]


def _number(value: Optional[float], digits: int) -> str:
    if value is None or not np.isfinite(value):
        return "—"
    return f"{value:.{digits}f}"


def _percent(value: Optional[float]) -> str:
    return "—" if value is None else f"{100 * value:.0f} %"


def _identified(metrics: dict) -> str:
    if not metrics["predicted"]:
        return "no (missing)"
    return "yes" if metrics["identified"] else "**no**"


def _case_note(result: CaseResult) -> str:
    parts = [f"{result.seconds:.1f} s"]
    if not result.levels:
        parts.append("no evaluated level in the truth")
    if result.false_positives:
        parts.append("false-positive levels: " + ", ".join(result.false_positives))
    if result.flags:
        parts.append("flags: " + "; ".join(result.flags))
    if result.error:
        parts.append(f"**error**: {result.error}")
    return f"- {result.case}: " + "; ".join(parts)


def _finite_or_none(value: object) -> object:
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(item) for item in value]
    return value


def _write_atomically(path: Path, text: str) -> Path:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
    return path
