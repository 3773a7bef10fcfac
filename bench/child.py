"""One measured run in a fresh process: ``python -m bench.child MODE --input ... --result FILE``.

Modes:
    ours      the LumbarSeg pipeline (``run_segment``: read, localize, crop, segment,
              post-process, restore, write), with nested wall times of its stages;
    baseline  the same XUNet by sliding window over the whole volume at its spacing,
              no localizer: read, resample, network, restore, write (what a
              whole-volume tool does), built from the library's own functions;
    profile   ``ours`` under cProfile, top entries written to a text file;
    window    one XUNet window in fp32 and, optionally, under bf16 autocast.

The child writes its timings and its peak resident memory (VmHWM, its own
high-water mark) as JSON to ``--result``.
"""

from __future__ import annotations

import time

PROCESS_START = time.perf_counter()

import argparse  # noqa: E402  (the clock starts before the heavy imports)
import cProfile  # noqa: E402
import functools  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import pstats  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
import torch  # noqa: E402

from LumbarSegLib import geometry, inference, localize, pipeline, seg_nrrd, segment  # noqa: E402
from LumbarSegLib.inference import prepare_network, select_device, sliding_window  # noqa: E402
from LumbarSegLib.intensity import AIR_INPUT, normalise_hu  # noqa: E402
from LumbarSegLib.io import output_stem, read_ct  # noqa: E402
from LumbarSegLib.models import XUNET_FILE, build_network, load_network  # noqa: E402
from LumbarSegLib.progress import Progress  # noqa: E402

from bench.prototypes import apply_prototypes  # noqa: E402

IMPORTED = time.perf_counter()


class NestedTimes:
    """Inclusive wall time of wrapped functions, keyed by their call path (``segment/resample``)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._stack: list[str] = []

    def wrap(self, owner: object, attribute: str, name: str) -> None:
        """Replace ``owner.attribute`` by a timed version named ``name``."""
        original: Callable = getattr(owner, attribute)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            self._stack.append(name)
            key = "/".join(self._stack)
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - start
                self._stack.pop()

        setattr(owner, attribute, timed)

    def rounded(self) -> dict[str, float]:
        return {key: round(value, 3) for key, value in self.seconds.items()}


def count_windows(owner: object, attribute: str, name: str, into: dict[str, dict]) -> None:
    """Record the grid and the number of windows of each ``sliding_window`` call under ``name``."""
    original: Callable = getattr(owner, attribute)

    @functools.wraps(original)
    def counted(net, volume, **kwargs):
        callback = kwargs.get("on_window")

        def on_window(done: int, total: int) -> None:
            into[name] = {"grid_zyx": list(volume.shape), "windows": total}
            if callback is not None:
                callback(done, total)

        return original(net, volume, **{**kwargs, "on_window": on_window})

    setattr(owner, attribute, counted)


def instrument_pipeline(windows: dict[str, dict]) -> NestedTimes:
    """Time the pipeline's stages and their parts without changing the pipeline's code."""
    count_windows(localize, "sliding_window", "localize", windows)
    count_windows(segment, "sliding_window", "segment", windows)
    times = NestedTimes()
    for owner, attribute, name in (
        (pipeline, "read_ct", "read"),
        (pipeline, "lumbar_probability", "localize"),
        (pipeline, "spine_box", "localize_box"),
        (pipeline, "segment_spine", "segment"),
        (pipeline, "clean", "postprocess"),
        (geometry, "restore_labels", "restore_labels"),
        (pipeline, "extend_to_cortical_rim", "cortical_rim"),
        (pipeline, "vertebra_measurements", "measurements"),
        (seg_nrrd, "write_seg_nrrd", "write_seg_nrrd"),
        (sitk, "WriteImage", "write_nifti"),
        (geometry, "resample_image", "resample"),
        (sitk, "GetArrayFromImage", "to_numpy"),
        (localize, "normalise_hu", "normalise"),
        (segment, "normalise_hu", "normalise"),
        (localize, "sliding_window", "network"),
        (segment, "sliding_window", "network"),
        (inference, "predict_logits", "forward"),
    ):
        times.wrap(owner, attribute, name)
    return times


def peak_rss_mb() -> float | None:
    """This process's peak resident memory (VmHWM) in MB, from /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def run_ours(args: argparse.Namespace) -> dict:
    """The pipeline end to end on the input; outputs go to a temporary folder that is removed."""
    device = select_device("cpu")
    models = pipeline.Models.load(device, localizer=args.localizer, xunet=args.xunet)
    loaded = time.perf_counter()
    prototypes = apply_prototypes(args.prototypes) if args.prototypes else []
    windows: dict[str, dict] = {}
    times = instrument_pipeline(windows)
    outdir = Path(tempfile.mkdtemp(prefix="lumbarseg-bench-"))
    try:
        start = time.perf_counter()
        _, result = pipeline.run_segment(
            args.input, outdir, pipeline.SegmentOptions(device="cpu", threads=args.threads, overwrite=True),
            progress=Progress("none"), models=models,
        )
        end_to_end = time.perf_counter() - start
        if args.labels_out:
            shutil.copyfile(outdir / f"{output_stem(args.input)}_seg.nii.gz", args.labels_out)
    finally:
        shutil.rmtree(outdir, ignore_errors=True)
    return {
        "end_to_end_s": round(end_to_end, 3),
        "stages_s": result.report["timings_s"],
        "nested_s": times.rounded(),
        "startup_s": {"imports": round(IMPORTED - PROCESS_START, 3), "models": round(loaded - IMPORTED, 3)},
        "windows": windows,
        "prototypes": prototypes,
        "crop_box_lps_mm": result.report["crop_box_lps_mm"],
        "levels": sorted(result.report["vertebrae"]),
        "flags": [flag["code"] for flag in result.report["flags"]],
    }


def run_baseline(args: argparse.Namespace) -> dict:
    """The XUNet over the whole volume at its spacing (no localizer), with the pipeline's own functions."""
    device = select_device("cpu")
    pipeline.set_threads(args.threads)
    net, spec = load_network(XUNET_FILE, args.xunet)
    net = prepare_network(net, device)
    timer = pipeline.StageTimer()
    start = time.perf_counter()
    ct = read_ct(args.input)
    timer.lap("read")
    reference = geometry.canonical_reference(geometry.physical_box(ct), spec.spacing_mm, multiple_of=net.size_multiple)
    volume = normalise_hu(sitk.GetArrayFromImage(geometry.resample_image(ct, reference)))
    timer.lap("resample")
    windows = []
    probabilities = sliding_window(
        net, volume, patch=spec.patch, device=device, pad_value=AIR_INPUT,
        activation="softmax", on_window=lambda done, total: windows.append(total),
    )
    timer.lap("network")
    labels = geometry.array_to_image(
        geometry.restore_labels(probabilities, reference, ct, values=pipeline.OUTPUT_LOOKUP), ct)
    timer.lap("restore")
    with tempfile.TemporaryDirectory(prefix="lumbarseg-bench-") as outdir:
        sitk.WriteImage(labels, str(Path(outdir) / "baseline_seg.nii.gz"), useCompression=True)
        timer.lap("write")
    return {
        "end_to_end_s": round(time.perf_counter() - start, 3),
        "stages_s": timer.seconds,
        "grid": list(reference.GetSize()),
        "windows": windows[-1] if windows else 0,
    }


def run_profile(args: argparse.Namespace) -> dict:
    """``ours`` under cProfile; the top entries by own and by cumulative time go to ``args.profile_out``."""
    profiler = cProfile.Profile()
    profiler.enable()
    result = run_ours(args)
    profiler.disable()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text).strip_dirs()
    text.write("== top 30 by cumulative time ==\n")
    stats.sort_stats("cumulative").print_stats(30)
    text.write("== top 30 by own (total) time ==\n")
    stats.sort_stats("tottime").print_stats(30)
    args.profile_out.write_text(text.getvalue())
    return result


def window_input(shape: tuple[int, int, int], spacing_mm: float) -> np.ndarray:
    """A normalised window of a small phantom around its lumbar spine (a realistic input)."""
    from LumbarSegLib.phantom import make_phantom

    ct, _, _ = make_phantom(0, kind="lumbar", spacing=(spacing_mm,) * 3)
    volume = normalise_hu(sitk.GetArrayFromImage(ct))
    out = np.full(shape, -1.0, dtype=np.float32)
    src = [slice(max(0, (n - s) // 2), max(0, (n - s) // 2) + min(n, s)) for n, s in zip(volume.shape, shape)]
    dst = [slice(max(0, (s - n) // 2), max(0, (s - n) // 2) + min(n, s)) for n, s in zip(volume.shape, shape)]
    out[tuple(dst)] = volume[tuple(src)]
    return out


def timed_forward(net: torch.nn.Module, x: torch.Tensor, *, bf16: bool, repeats: int) -> tuple[float, torch.Tensor]:
    """Median wall time of ``repeats`` forward passes (after one warm-up) and the last logits."""
    seconds = []
    with torch.inference_mode():
        context = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else torch.autocast("cpu", enabled=False)
        with context:
            logits = net(x)
            for _ in range(repeats):
                start = time.perf_counter()
                logits = net(x)
                seconds.append(time.perf_counter() - start)
    return float(np.median(seconds)) if seconds else float("nan"), logits.float()


def run_window(args: argparse.Namespace) -> dict:
    """One XUNet window: fp32, and with ``--bf16`` bf16 autocast + channels_last_3d (as on AMX CPUs)."""
    pipeline.set_threads(args.threads)
    net, spec = load_network(XUNET_FILE, args.xunet)
    shape = tuple(args.window) if args.window else tuple(spec.patch)
    x = torch.from_numpy(window_input(shape, spec.spacing_mm))[None, None]
    fp32_s, fp32 = timed_forward(net.eval(), x, bf16=False, repeats=3)
    result = {"window": list(shape), "fp32_s": round(fp32_s, 4),
              "cpu_has_fast_bf16": inference.cpu_has_fast_bf16(), "torch": torch.__version__}
    if args.bf16:
        fast = net.to(memory_format=torch.channels_last_3d)
        bf16_s, bf16 = timed_forward(fast, x.contiguous(memory_format=torch.channels_last_3d), bf16=True, repeats=1)
        agree = (bf16.argmax(1) == fp32.argmax(1)).float().mean().item()
        result.update({"bf16_s": round(bf16_s, 4), "bf16_over_fp32": round(bf16_s / fp32_s, 1),
                       "max_abs_logit_diff": round(float((bf16 - fp32).abs().max()), 4),
                       "argmax_agreement": round(agree, 5)})
    return result


def timed_training_step(net: torch.nn.Module, x: torch.Tensor, *, classes: int, bf16: bool, repeats: int) -> float:
    """Median wall time of ``repeats`` XUNet training steps (``train.training_step``, AdamW) after one warm-up."""
    from LumbarSegLib.training.train import training_step

    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    target = torch.randint(0, classes, x[:, 0].shape)
    valid = torch.ones_like(target, dtype=torch.bool)
    seconds = []
    for _ in range(repeats + 1):
        precision = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else torch.autocast("cpu", enabled=False)
        start = time.perf_counter()
        training_step(net, optimizer, scaler, x, target, valid, kind="xunet", precision=precision)
        seconds.append(time.perf_counter() - start)
    return float(np.median(seconds[1:]))


def run_train_step(args: argparse.Namespace) -> dict:
    """One XUNet training step (batch 2 of training patches): fp32, fp32 channels-last, bf16 channels-last."""
    pipeline.set_threads(args.threads)
    _, spec = load_network(XUNET_FILE, args.xunet)
    x = torch.from_numpy(window_input(tuple(spec.patch), spec.spacing_mm))[None, None].repeat(2, 1, 1, 1, 1)
    result = {"patch": list(spec.patch), "batch": 2, "cpu_has_fast_bf16": inference.cpu_has_fast_bf16()}
    layouts = {"fp32_s": (False, False), "fp32_channels_last_s": (False, True), "bf16_channels_last_s": (True, True)}
    for key, (bf16, channels_last) in layouts.items():
        net = build_network(spec).train()
        batch = x
        if channels_last:
            net = net.to(memory_format=torch.channels_last_3d)
            batch = x.contiguous(memory_format=torch.channels_last_3d)
        result[key] = round(timed_training_step(net, batch, classes=spec.num_classes, bf16=bf16, repeats=3), 3)
    result["fp32_over_bf16"] = round(result["fp32_s"] / result["bf16_channels_last_s"], 2)
    return result


MODES = {"ours": run_ours, "baseline": run_baseline, "profile": run_profile, "window": run_window,
         "train-step": run_train_step}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.child")
    parser.add_argument("mode", choices=sorted(MODES))
    parser.add_argument("--input", type=Path)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--localizer", type=Path)
    parser.add_argument("--xunet", type=Path)
    parser.add_argument("--profile-out", type=Path)
    parser.add_argument("--window", type=int, nargs=3)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--labels-out", type=Path, help="keep the label map written by the run here")
    parser.add_argument("--prototypes", help="apply these bench/prototypes.py changes (comma-separated, or all)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = MODES[args.mode](args)
    result["child_vmhwm_mb"] = peak_rss_mb()
    result["process_s"] = round(time.perf_counter() - PROCESS_START, 3)
    args.result.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
