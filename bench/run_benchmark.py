"""LumbarSeg speed and memory benchmark (issue 5): one command, Markdown + JSON results.

    python bench/run_benchmark.py [--quick] [--threads N] [--inputs large,medium,real]

Every measured run is a fresh child process (``bench/child.py``) so its peak
resident memory is its own. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import SimpleITK as sitk  # noqa: E402

from bench import report  # noqa: E402
from bench.inputs import DEFAULT_CACHE, INPUT_NAMES, PHANTOMS, REAL_CT, input_path  # noqa: E402

RESULTS = REPO / "bench" / "results"
WINDOW_TIMEOUT_S = 120.0
BF16_WINDOW = (32, 32, 32)


class ChildFailed(RuntimeError):
    """A measured child process failed or timed out."""


def run_child(mode: str, options: list[str], *, timeout: float | None = None) -> dict:
    """Run ``bench.child`` in a fresh process; its JSON result plus its wall time and peak RSS (its VmHWM)."""
    with tempfile.TemporaryDirectory(prefix="lumbarseg-bench-") as scratch:
        result_file, log_file = Path(scratch) / "result.json", Path(scratch) / "log.txt"
        command = [sys.executable, "-m", "bench.child", mode, "--result", str(result_file), *options]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        with log_file.open("w") as log:
            start = time.perf_counter()
            process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
            timer = threading.Timer(timeout, process.kill) if timeout else None
            if timer:
                timer.start()
            _, status, usage = os.wait4(process.pid, 0)
            wall = time.perf_counter() - start
            process.returncode = os.waitstatus_to_exitcode(status)
            if timer:
                timer.cancel()
        if process.returncode != 0 or not result_file.exists():
            tail = log_file.read_text()[-1500:]
            raise ChildFailed(f"{mode} failed (exit {process.returncode}, {wall:.0f} s):\n{tail}")
        result = json.loads(result_file.read_text())
    result["process_wall_s"] = round(wall, 3)
    # The child's own high-water mark: ru_maxrss also counts the pre-exec image, i.e. this parent's peak.
    result["rusage_maxrss_mb"] = round(usage.ru_maxrss / 1024, 1)
    result["peak_rss_mb"] = result.pop("child_vmhwm_mb", None) or result["rusage_maxrss_mb"]
    return result


def model_options(args: argparse.Namespace) -> list[str]:
    options = ["--threads", str(args.threads)]
    if args.localizer:
        options += ["--localizer", str(args.localizer)]
    if args.xunet:
        options += ["--xunet", str(args.xunet)]
    return options


def describe_input(path: Path) -> dict:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return {"path": str(path), "size": list(reader.GetSize()), "spacing": [round(s, 4) for s in reader.GetSpacing()],
            "pixel": sitk.GetPixelIDValueAsString(reader.GetPixelID()), "file_mb": round(path.stat().st_size / 2**20, 1)}


def measure_input(name: str, path: Path, args: argparse.Namespace) -> dict:
    """The pipeline ``args.repeats`` times and the baseline ``args.baseline_repeats`` times on one input."""
    entry = describe_input(path)
    options = ["--input", str(path), *model_options(args)]
    entry["runs"], entry["baseline_runs"] = [], []
    variants = [("runs", [])] + ([("prototype_runs", ["--prototypes", args.prototypes])] if args.prototypes else [])
    scratch = Path(tempfile.mkdtemp(prefix="lumbarseg-bench-labels-"))
    for key, extra in variants:
        entry[key] = []
        for repeat in range(args.repeats):
            keep = ["--labels-out", str(scratch / f"{key}.nii.gz")] if repeat == 0 else []
            entry[key].append(run_child("ours", options + extra + keep))
            say(f"  {name} {key.replace('_', ' ')[:-1]} {repeat + 1}: {entry[key][-1]['end_to_end_s']:.2f} s, "
                f"{entry[key][-1]['peak_rss_mb']:.0f} MB")
    for repeat in range(args.baseline_repeats):
        entry["baseline_runs"].append(run_child("baseline", options))
        say(f"  {name} baseline {repeat + 1}: {entry['baseline_runs'][-1]['end_to_end_s']:.2f} s, "
            f"{entry['baseline_runs'][-1]['peak_rss_mb']:.0f} MB")
    entry["summary"] = report.summarise(entry["runs"], entry["baseline_runs"])
    if args.prototypes:
        entry["summary_prototypes"] = report.summarise(entry["prototype_runs"], entry["baseline_runs"])
        current, proposed = (sitk.GetArrayFromImage(sitk.ReadImage(str(scratch / f"{key}.nii.gz")))
                             for key in ("runs", "prototype_runs"))
        entry["summary_prototypes"]["dice_vs_current"] = report.dice_by_label(current, proposed)
    shutil.rmtree(scratch, ignore_errors=True)
    return entry


def measure_precision(args: argparse.Namespace) -> list[dict]:
    """fp32 on a full XUNet window; fp32 vs bf16 autocast on a small one (bf16 is very slow without AMX)."""
    options = model_options(args)
    measured = []
    for label, extra in (("full window fp32", []),
                         ("small window fp32 vs bf16", ["--window", *map(str, BF16_WINDOW), "--bf16"])):
        try:
            result = run_child("window", options + extra, timeout=WINDOW_TIMEOUT_S)
            measured.append({"label": label, **result})
        except ChildFailed as error:
            measured.append({"label": label, "error": str(error).splitlines()[0]})
        say(f"  {measured[-1]}")
    return measured


def profile_largest(inputs: dict[str, dict], args: argparse.Namespace) -> dict:
    """cProfile of one pipeline run on the input with the most voxels, saved beside the results."""
    name = max(inputs, key=lambda n: inputs[n]["size"][0] * inputs[n]["size"][1] * inputs[n]["size"][2])
    out = args.out / f"profile_{name}.txt"
    run_child("profile", ["--input", inputs[name]["path"], "--profile-out", str(out), *model_options(args)])
    return {"input": name, "file": out.name}


def meta(args: argparse.Namespace) -> dict:
    import torch

    from LumbarSegLib import __version__
    from LumbarSegLib.models import load_network

    def model(path: Path | None, bundled: str) -> str:
        _, spec = load_network(bundled, path)
        where = str(path) if path else f"bundled {bundled}"
        return f"{spec.kind} {spec.version} ({where}, {spec.training.get('steps', '?')} steps)"

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "threads": args.threads,
        "torch": torch.__version__,
        "simpleitk": sitk.Version.VersionString(),
        "lumbarseg": __version__,
        "commit": commit.stdout.strip() or "?",
        "models": "; ".join([model(args.localizer, "localizer.pt"), model(args.xunet, "xunet.pt")]),
        "repeats": args.repeats,
        "baseline_repeats": args.baseline_repeats,
        "loadavg": " ".join(f"{v:.2f}" for v in os.getloadavg()),
        "note": args.note,
    }


def say(text: str) -> None:
    print(text, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", default=",".join(INPUT_NAMES),
                        help=f"comma-separated inputs (default: {','.join(INPUT_NAMES)})")
    parser.add_argument("--quick", action="store_true", help="one run per input (default: --repeats)")
    parser.add_argument("--repeats", type=int, default=3, help="pipeline runs per input (median; default 3)")
    parser.add_argument("--baseline-repeats", type=int, default=1,
                        help="whole-volume baseline runs per input (default 1; 0 skips it)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads (default: all cores)")
    parser.add_argument("--localizer", type=Path, help="localizer model file (default: bundled)")
    parser.add_argument("--xunet", type=Path, help="XUNet model file (default: bundled)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"input cache (default: {DEFAULT_CACHE})")
    parser.add_argument("--real-ct", type=Path, default=REAL_CT, help="the real CT input")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default: bench/results)")
    parser.add_argument("--prototypes", nargs="?", const="all",
                        help="also measure the pipeline with the proposed changes of bench/prototypes.py applied "
                             "(all, or comma-separated names: read)")
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile run")
    parser.add_argument("--no-precision", action="store_true", help="skip the fp32/bf16 window measurement")
    parser.add_argument("--note", default="", help="a remark written into the results (e.g. concurrent load)")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = 1
    args.inputs = [name.strip() for name in args.inputs.split(",") if name.strip()]
    unknown = sorted(set(args.inputs) - set(INPUT_NAMES))
    if unknown:
        parser.error(f"unknown inputs {unknown}; choose from {', '.join(INPUT_NAMES)}")
    args.localizer = args.localizer.resolve() if args.localizer else None
    args.xunet = args.xunet.resolve() if args.xunet else None
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {"meta": meta(args), "inputs": {}}
    for name in args.inputs:
        start = time.perf_counter()
        if name in PHANTOMS:
            say(f"{name}: input {PHANTOMS[name].key} (rendered once into {args.cache})")
        path = input_path(name, args.cache, real_ct=args.real_ct)
        if path is None:
            say(f"{name}: {args.real_ct} is absent; skipped")
            continue
        say(f"{name}: input ready in {time.perf_counter() - start:.1f} s; measuring")
        try:
            results["inputs"][name] = measure_input(name, path, args)
        except ChildFailed as error:
            say(f"{name}: {error}")
            results.setdefault("failed", {})[name] = str(error)
    results["targets"] = report.check_targets(report.labelled_summaries(results["inputs"]))
    if not args.no_precision:
        say("precision: one XUNet window")
        results["precision"] = measure_precision(args)
    if not args.no_profile and results["inputs"]:
        say("profile: one run under cProfile")
        results["profile"] = profile_largest(results["inputs"], args)
    (args.out / "benchmark.json").write_text(json.dumps(results, indent=2) + "\n")
    text = report.markdown(results)
    (args.out / "benchmark.md").write_text(text)
    say(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
