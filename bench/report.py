"""Pure helpers of the benchmark: medians over runs, speed-up, target checks, the Markdown report."""

from __future__ import annotations

import statistics
from typing import Iterable, Sequence

import numpy as np

# Issue 5's targets on 2 CPU cores: (input, metric, limit, direction).
TARGETS: tuple[tuple[str, str, float, str], ...] = (
    ("large", "end_to_end_s", 30.0, "max"),
    ("large", "peak_rss_mb", 3072.0, "max"),
    ("medium", "end_to_end_s", 15.0, "max"),
    ("large", "speedup", 5.0, "min"),
    ("medium", "speedup", 5.0, "min"),
)
# Parts of the pipeline that are not the networks (the issue wants them well under the network time).
NETWORK_KEYS = ("localize/network", "segment/network")
DATA_KEYS = ("read", "localize/resample", "segment/resample", "restore_labels", "write_nifti", "write_seg_nrrd")


def median(values: Iterable[float]) -> float | None:
    """Median of the values that are not None; None when there are none."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def median_by_key(runs: Sequence[dict[str, float]]) -> dict[str, float]:
    """Per key, the median over the runs that have it; keys in first-seen order."""
    keys = list(dict.fromkeys(key for run in runs for key in run))
    return {key: round(median(run.get(key) for run in runs), 3) for key in keys}


def speedup(baseline_s: float | None, ours_s: float | None) -> float | None:
    """How many times faster ours is than the baseline (baseline / ours)."""
    if not baseline_s or not ours_s:
        return None
    return round(baseline_s / ours_s, 2)


def summarise(runs: Sequence[dict], baseline_runs: Sequence[dict]) -> dict:
    """Medians of the measured runs of one input, its peak memory, and the speed-up over the baseline."""
    summary = {
        "runs": len(runs),
        "end_to_end_s": median(r["end_to_end_s"] for r in runs),
        "process_wall_s": median(r["process_wall_s"] for r in runs),
        "peak_rss_mb": max((r["peak_rss_mb"] for r in runs), default=None),
        "stages_s": median_by_key([r["stages_s"] for r in runs]),
        "nested_s": median_by_key([r["nested_s"] for r in runs]),
        "startup_s": median_by_key([r["startup_s"] for r in runs]),
        "windows": runs[0]["windows"] if runs else {},
    }
    nested = summary["nested_s"]
    summary["network_s"] = round(sum(nested.get(k, 0.0) for k in NETWORK_KEYS), 3)
    summary["data_s"] = round(sum(nested.get(k, 0.0) for k in DATA_KEYS), 3)
    if baseline_runs:
        summary["baseline"] = {
            "runs": len(baseline_runs),
            "end_to_end_s": median(r["end_to_end_s"] for r in baseline_runs),
            "process_wall_s": median(r["process_wall_s"] for r in baseline_runs),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in baseline_runs),
            "stages_s": median_by_key([r["stages_s"] for r in baseline_runs]),
            "grid": baseline_runs[0]["grid"],
            "windows": baseline_runs[0]["windows"],
        }
        summary["speedup"] = speedup(summary["baseline"]["end_to_end_s"], summary["end_to_end_s"])
        summary["speedup_network"] = speedup(summary["baseline"]["stages_s"].get("network"), summary["network_s"])
    return summary


PROPOSED = " + proposed changes"


def labelled_summaries(inputs: dict[str, dict]) -> dict[str, dict]:
    """Every measured variant by label: ``large``, and ``large + proposed changes`` when measured."""
    labelled = {}
    for name, entry in inputs.items():
        labelled[name] = entry["summary"]
        if "summary_prototypes" in entry:
            labelled[name + PROPOSED] = entry["summary_prototypes"]
    return labelled


def dice_by_label(a: np.ndarray, b: np.ndarray) -> dict[int, dict]:
    """Per non-zero label value present in either label map: Dice and the voxel count in each."""
    values = sorted((set(np.unique(a).tolist()) | set(np.unique(b).tolist())) - {0})
    result = {}
    for value in values:
        in_a, in_b = a == value, b == value
        count_a, count_b = int(in_a.sum()), int(in_b.sum())
        dice = 2.0 * int((in_a & in_b).sum()) / (count_a + count_b)
        result[int(value)] = {"dice": round(dice, 4), "voxels": [count_a, count_b]}
    return result


def check_targets(summaries: dict[str, dict]) -> list[dict]:
    """Each target of the issue for each measured variant of its input, with the value reached and whether met."""
    checks = []
    for label, summary in summaries.items():
        for name, metric, limit, direction in TARGETS:
            value = summary.get(metric)
            if name != label.split(" ")[0] or value is None:
                continue
            met = value <= limit if direction == "max" else value >= limit
            checks.append({"input": label, "metric": metric, "limit": limit, "direction": direction, "value": value,
                           "met": met})
    return checks


def _windows(count: int) -> str:
    return f"{count} window" + ("" if count == 1 else "s")


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def stage_table(summaries: dict[str, dict]) -> list[str]:
    """One row per pipeline stage (the report's ``timings_s``), one column per measured variant."""
    stages = list(dict.fromkeys(s for summary in summaries.values() for s in summary["stages_s"]))
    return _table(["stage (s)", *summaries], (
        [stage, *(_fmt(summary["stages_s"].get(stage)) for summary in summaries.values())] for stage in stages
    ))


def nested_table(summary: dict, *, shortest_s: float = 0.01) -> list[str]:
    """The nested wall times of one input (parts of at least ``shortest_s``), with their share of the total."""
    total = summary["end_to_end_s"]
    return _table(["part (inclusive)", "s", "% of end to end"], (
        [key.replace("/", " / "), _fmt(seconds), _fmt(100 * seconds / total, 1)]
        for key, seconds in summary["nested_s"].items() if seconds >= shortest_s
    ))


def precision_line(measured: dict) -> str:
    """One line of the fp32/bf16 window measurement."""
    if "error" in measured:
        return f"- {measured['label']}: {measured['error']}"
    text = f"- {measured['label']} ({'×'.join(map(str, measured['window']))} voxels): fp32 {measured['fp32_s']} s"
    if "bf16_s" in measured:
        text += (f", bf16 autocast {measured['bf16_s']} s ({measured['bf16_over_fp32']}× fp32), max |Δlogit| "
                 f"{measured['max_abs_logit_diff']}, argmax agreement {measured['argmax_agreement']}")
    return text


def markdown(results: dict) -> str:
    """The benchmark report as Markdown."""
    meta, inputs = results["meta"], results["inputs"]
    summaries = labelled_summaries(inputs)
    entries = {label: inputs[label.split(" ")[0]] for label in summaries}
    lines = ["# LumbarSeg benchmark", "",
             f"{meta['date']} · {meta['cpu']} · {meta['threads']} threads · torch {meta['torch']} · "
             f"SimpleITK {meta['simpleitk']} · LumbarSeg {meta['lumbarseg']} ({meta['commit']})", "",
             f"Models: {meta['models']}. Runs per input: {meta['repeats']} (median), baseline: "
             f"{meta['baseline_repeats']}. Load average before the runs: {meta['loadavg']}.", ""]
    if meta.get("note"):
        lines += [f"Note: {meta['note']}", ""]
    lines += ["## End to end", ""]
    lines += _table(
        ["input", "grid (x·y·z)", "spacing mm", "end to end s", "process s", "peak RSS MB", "baseline s",
         "baseline RSS MB", "baseline / ours", "network: baseline / ours"],
        ([name, "×".join(map(str, i["size"])), "×".join(f"{s:g}" for s in i["spacing"]),
          _fmt(s["end_to_end_s"]), _fmt(s["process_wall_s"]), _fmt(s["peak_rss_mb"], 0),
          _fmt(s.get("baseline", {}).get("end_to_end_s")), _fmt(s.get("baseline", {}).get("peak_rss_mb"), 0),
          _fmt(s.get("speedup"), 1), _fmt(s.get("speedup_network"), 1)]
         for name, s in summaries.items() for i in [entries[name]]))
    lines += ["", "*End to end*: `run_segment` from reading the file to the last output written (models loaded "
              "beforehand). *Process*: the whole fresh process as the Slicer module runs it (Python start, imports, "
              "model loading included). *Peak RSS*: the process's maximum resident set (its `VmHWM`).", ""]
    lines += ["## Targets (issue 5)", ""]
    lines += _table(["input", "metric", "target", "reached", "met"], (
        [t["input"], t["metric"], ("≤ " if t["direction"] == "max" else "≥ ") + _fmt(t["limit"], 1),
         _fmt(t["value"]), "yes" if t["met"] else "**no**"] for t in results["targets"]))
    lines += ["", "## Stages (median, seconds)", ""]
    lines += stage_table(summaries)
    for name, summary in summaries.items():
        lines += ["", f"### Where the time goes: {name}", ""]
        grids = "; ".join(f"{stage} grid {'×'.join(map(str, w['grid_zyx']))} (z·y·x), {_windows(w['windows'])}"
                          for stage, w in summary["windows"].items())
        startup = summary["startup_s"]
        lines += [f"Networks {_fmt(summary['network_s'])} s; reading, resampling, restoring and writing "
                  f"{_fmt(summary['data_s'])} s. {grids}. Before `run_segment`: imports "
                  f"{_fmt(startup.get('imports'))} s, model loading {_fmt(startup.get('models'))} s.", ""]
        lines += nested_table(summary)
        if summary.get("dice_vs_current"):
            lines += ["", "Its label map against the current pipeline's, per VerSe label: " + ", ".join(
                f"{value}: Dice {d['dice']} ({d['voxels'][0]} vs {d['voxels'][1]} voxels)"
                for value, d in summary["dice_vs_current"].items())]
        if "baseline" in summary and PROPOSED not in name:
            base = summary["baseline"]
            lines += ["", f"Baseline (whole volume, grid {'×'.join(map(str, base['grid']))}, "
                          f"{_windows(base['windows'])}): " + ", ".join(
                              f"{k} {_fmt(v)} s" for k, v in base["stages_s"].items())]
    for name, error in results.get("failed", {}).items():
        lines += ["", f"**{name} failed**:", "", "```", error, "```"]
    if results.get("precision"):
        lines += ["", "## Precision: fp32 vs bf16 autocast (one XUNet window)", ""]
        lines += [precision_line(p) for p in results["precision"]]
        fast = next((p["cpu_has_fast_bf16"] for p in results["precision"] if "cpu_has_fast_bf16" in p), None)
        lines += ["", f"`inference.cpu_has_fast_bf16()` = {fast}: the pipeline runs "
                      f"{'bf16 autocast' if fast else 'fp32'} on this CPU."]
    if results.get("profile"):
        lines += ["", f"## Profile\n\ncProfile of one run on `{results['profile']['input']}`: "
                      f"[{results['profile']['file']}]({results['profile']['file']})."]
    return "\n".join(lines) + "\n"
