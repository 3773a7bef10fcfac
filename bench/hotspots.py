"""Measured evidence for changes to the pipeline's hot spots (prototypes only; the library is not changed).

    python -m bench.hotspots --input ~/.cache/lumbarseg-bench/<large>.nii.gz [--localizer F] [--xunet F]

Runs the pipeline's pieces once on the input, then times each current
function against a prototype of the proposed change on the same data, checks
that the result is the same (or says how much it differs), and writes
``results/hotspots.json``. Peak memory of a step is its high-water mark above
the resident set before it (``/proc/self/clear_refs`` resets the mark).
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk

from LumbarSegLib import geometry, io, pipeline
from LumbarSegLib.inference import select_device, sliding_window
from LumbarSegLib.intensity import AIR_INPUT, normalise_hu
from LumbarSegLib.io import read_ct
from LumbarSegLib.localize import lumbar_probability, spine_box
from LumbarSegLib.measurements import vertebra_measurements
from LumbarSegLib.postprocess import clean
from LumbarSegLib.segment import crop_reference, inference_window

from bench.prototypes import gzip_trailer_size, localizer_single_pass

PAD = AIR_INPUT


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measured(step: Callable[[], object]) -> tuple[object, dict]:
    """Run ``step`` once: its result, wall time and peak memory above the resident set before it."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_mb("VmRSS")
    start = time.perf_counter()
    result = step()
    seconds = time.perf_counter() - start
    return result, {"s": round(seconds, 3), "peak_above_mb": round(_status_mb("VmHWM") - before, 1)}


# -- the comparisons -------------------------------------------------------------------------------

def box_difference_mm(a: geometry.Box, b: geometry.Box) -> float:
    return float(max(np.abs(a.lower - b.lower).max(), np.abs(a.upper - b.upper).max()))


def compare(args: argparse.Namespace) -> dict:
    device = select_device("cpu")
    pipeline.set_threads(args.threads)
    models = pipeline.Models.load(device, localizer=args.localizer, xunet=args.xunet)
    ct, read = measured(lambda: read_ct(args.input))
    out: dict = {"input": str(args.input), "size": list(ct.GetSize()), "read": read}
    if args.input.name.endswith(".gz"):
        length, now = measured(lambda: io._nifti_byte_count(args.input, str(args.input)))
        trailer, new = measured(lambda: gzip_trailer_size(args.input))
        out["read_length_check"] = {"current_decompress": now, "gzip_trailer": new,
                                    "same_length": length % 2**32 == trailer}
    loc_spec, x_spec = models.localizer_spec, models.xunet_spec

    coarse = geometry.canonical_reference(geometry.physical_box(ct), loc_spec.spacing_mm,
                                          multiple_of=models.localizer.size_multiple)
    volume = normalise_hu(sitk.GetArrayFromImage(geometry.resample_image(ct, coarse)))
    (probability, _), now = measured(lambda: lumbar_probability(ct, models.localizer, loc_spec, device=device))
    single, new = measured(lambda: localizer_single_pass(models.localizer, volume, device))
    box = spine_box(probability, coarse)
    try:
        single_box = box_difference_mm(box, spine_box(single, coarse))
    except Exception as error:  # noqa: BLE001  (a failure to find the spine is a result here)
        single_box = f"{type(error).__name__}: {error}"
    out["localizer_network"] = {"current_sliding_window_incl_resample": now, "single_pass": new,
                                "max_abs_probability_diff": round(float(np.abs(single - probability).max()), 4),
                                "box_difference_mm": single_box}

    crop = crop_reference(box, x_spec, multiple_of=models.xunet.size_multiple)
    crop_hu = sitk.GetArrayFromImage(geometry.resample_image(ct, crop))
    whole_crop = inference_window(crop_hu.shape, x_spec, multiple_of=models.xunet.size_multiple)
    out["segment"] = {"grid_zyx": list(crop_hu.shape)}
    results = {}
    for name, window in (("one window over the crop (current)", whole_crop),
                         ("training-size windows, overlap 0.5", x_spec.patch)):
        windows: list[int] = []
        probs, timing = measured(lambda: sliding_window(
            models.xunet, normalise_hu(crop_hu), patch=window, device=device, pad_value=PAD,
            activation="softmax", on_window=lambda done, total: windows.append(total)))
        out["segment"][name] = {"window_zyx": list(window), "windows": windows[-1], **timing}
        results[name] = probs
    probabilities = results["one window over the crop (current)"]
    out["segment"]["argmax agreement"] = round(float(
        (results["training-size windows, overlap 0.5"].argmax(0) == probabilities.argmax(0)).mean()), 5)

    cleaned, timing = measured(lambda: clean(probabilities, hu=crop_hu, spacing_mm=x_spec.spacing_mm,
                                             origin_z_mm=crop.GetOrigin()[2]))
    out["postprocess"] = timing
    _, now = measured(lambda: geometry.restore_labels(probabilities, crop, ct, values=pipeline.OUTPUT_LOOKUP))
    out["restore"] = {"argmax only": now}
    restored, now = measured(lambda: pipeline.restore_to_input(probabilities, crop, ct))
    out["restore"]["current"] = now

    labels = geometry.array_to_image(restored, ct)
    full, now = measured(lambda: vertebra_measurements(ct, labels))
    nonzero = np.argwhere(sitk.GetArrayViewFromImage(labels))
    if nonzero.size:
        lower = np.maximum(nonzero.min(axis=0) - 1, 0)[::-1]
        size = (np.minimum(nonzero.max(axis=0) + 2, ct.GetSize()[::-1])[::-1] - lower)
        roi = functools.partial(sitk.RegionOfInterest, size=[int(s) for s in size], index=[int(i) for i in lower])
        sub, new = measured(lambda: vertebra_measurements(roi(ct), roi(labels)))
        same = {name: {k: v for k, v in values.items() if k not in ("touches_fov_border",)}
                for name, values in full.items()} == {
            name: {k: v for k, v in values.items() if k not in ("touches_fov_border",)} for name, values in sub.items()}
        out["measurements"] = {"current_full_grid": now, "label_box_only": new, "same_values": same}

    with tempfile.TemporaryDirectory(prefix="lumbarseg-hotspots-") as scratch:
        out["write"] = write_comparison(labels, Path(scratch))
    return out


def write_comparison(labels: sitk.Image, scratch: Path) -> dict:
    """Writing the label map as NIfTI: gzip default level vs level 1."""
    timings = {}
    for name, level in (("nifti default", -1), ("nifti level 1", 1)):
        path = scratch / f"{name.replace(' ', '_')}.nii.gz"
        _, timings[name] = measured(lambda: sitk.WriteImage(labels, str(path), True, level))
        timings[name]["mb"] = round(path.stat().st_size / 2**20, 2)
    return timings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hotspots", description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--localizer", type=Path)
    parser.add_argument("--xunet", type=Path)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "hotspots.json")
    args = parser.parse_args(argv)
    result = compare(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
