"""The Dice a perfect network could reach on a segmentation grid of a given spacing.

The XUNet labels a canonical grid (2.0 mm; 2.5 mm until session 5) and the pipeline restores its
probabilities to the input grid with linear interpolation. This measures what
that round trip alone costs: the truth is resampled onto the grid (nearest
neighbour, as training targets are), one-hot encoded, restored to the input
grid with ``geometry.restore_labels`` and scored against itself.

    python -m bench.grid_ceiling --data ../shared/data/realct --phantoms 8 --spacings 2.5 2.0 1.5

Writes ``bench/results/grid_ceiling.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from LumbarSegLib import geometry
from LumbarSegLib.evaluation import find_cases
from LumbarSegLib.metrics import EVALUATED_LEVELS, dice
from LumbarSegLib.phantom.dataset import write_phantom_cases

RESULTS = Path(__file__).parent / "results" / "grid_ceiling.json"
MARGIN_MM = 20.0


def lumbar_truth(path: Path) -> sitk.Image:
    """The truth mask with only the evaluated lumbar levels kept (VerSe values)."""
    truth = sitk.ReadImage(str(path), sitk.sitkUInt8)
    array = sitk.GetArrayFromImage(truth)
    array[~np.isin(array, EVALUATED_LEVELS)] = 0
    return geometry.array_to_image(array, truth)


def round_trip_dice(truth: sitk.Image, spacing_mm: float) -> dict[int, float]:
    """Per lumbar value: Dice of the truth against its round trip through a canonical grid of ``spacing_mm``."""
    array = sitk.GetArrayFromImage(truth)
    values = [int(v) for v in np.unique(array) if v]
    indices = np.argwhere(array > 0)
    lower, upper = indices.min(axis=0), indices.max(axis=0) + 1
    box = geometry.physical_box(geometry.sub_grid(truth, lower, upper)).expanded(MARGIN_MM)
    reference = geometry.canonical_reference(box, spacing_mm)
    on_grid = sitk.GetArrayFromImage(geometry.resample_labels(truth, reference))
    classes = np.array([0] + values)
    probabilities = (on_grid[None] == classes[:, None, None, None]).astype(np.float32)
    restored = geometry.restore_labels(probabilities, reference, truth, values=classes.astype(np.uint8))
    return {value: dice(restored == value, array == value) for value in values}


def measure(cases: list[tuple[str, Path]], spacings: list[float]) -> dict:
    results: dict = {}
    for case, truth_path in cases:
        truth = lumbar_truth(truth_path)
        results[case] = {"input_spacing_mm": [round(s, 2) for s in truth.GetSpacing()]}
        for spacing in spacings:
            scores = round_trip_dice(truth, spacing)
            results[case][str(spacing)] = round(float(np.mean(list(scores.values()))), 4)
        print(case, results[case], flush=True)
    return results


def to_markdown(results: dict, spacings: list[float]) -> str:
    header = "| case | input spacing (mm) | " + " | ".join(f"{s} mm" for s in spacings) + " |"
    lines = [header, "|---|---|" + "---:|" * len(spacings)]
    for case, row in results.items():
        spacing = " × ".join(f"{s:g}" for s in row["input_spacing_mm"])
        lines.append(f"| {case} | {spacing} | " + " | ".join(f"{row[str(s)]:.3f}" for s in spacings) + " |")
    means = [np.mean([row[str(s)] for row in results.values()]) for s in spacings]
    lines.append("| **mean** | | " + " | ".join(f"**{m:.3f}**" for m in means) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.grid_ceiling", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="VerSe-layout folder with real cases")
    parser.add_argument("--phantoms", type=int, default=8, help="held-out phantoms to add (as in evaluate)")
    parser.add_argument("--spacings", type=float, nargs="+", default=[2.5, 2.0, 1.5])
    parser.add_argument("--threads", type=int, default=1, help="SimpleITK threads")
    args = parser.parse_args(argv)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    cases = [(case, truth) for case, _, truth in find_cases(args.data)] if args.data else []
    with tempfile.TemporaryDirectory() as folder:
        if args.phantoms:
            write_phantom_cases(Path(folder), count=args.phantoms)
            cases += [(case, truth) for case, _, truth in find_cases(Path(folder))]
        results = measure(cases, args.spacings)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(to_markdown(results, args.spacings))


if __name__ == "__main__":
    main()
