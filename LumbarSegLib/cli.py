"""The ``lumbarseg`` command: segment, demo, evaluate, train.

Every expected failure ends as one line on stderr (``lumbarseg: error: ...``)
and the exit code of its class in ``LumbarSegLib.errors``; no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from LumbarSegLib import __version__
from LumbarSegLib.errors import CancelledError, LumbarSegError, ResourceLimitError

PROG = "lumbarseg"
INTERNAL_ERROR = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Segment the lumbar vertebrae L1-L5 in CT.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    segment = commands.add_parser("segment", help="segment one CT (file or DICOM folder)")
    segment.add_argument("input", type=Path, help="NIfTI, NRRD, MHA/MHD file or DICOM series folder")
    segment.add_argument("-o", "--output", type=Path, default=Path("."), help="output folder (default: .)")
    add_run_options(segment)
    segment.add_argument("--mesh", choices=("stl", "obj", "vtp"), help="also write one surface per vertebra")
    segment.add_argument("--preview", action="store_true", help="also write a PNG with three overlay views")
    segment.add_argument("--overwrite", action="store_true", help="replace existing outputs")

    demo = commands.add_parser("demo", help="segment a generated CT phantom and score it against its truth")
    demo.add_argument("-o", "--output", type=Path, default=Path("lumbarseg-demo"), help="output folder")
    demo.add_argument("--seed", type=int, default=0, help="phantom seed")
    add_run_options(demo)

    evaluate = commands.add_parser("evaluate", help="score the pipeline on a VerSe-layout folder")
    evaluate.add_argument("--data", type=Path, help="folder with rawdata/ and derivatives/ (VerSe layout)")
    evaluate.add_argument("--phantoms", type=positive_int,
                          help="also evaluate this many held-out phantoms (written to OUTDIR/phantoms)")
    evaluate.add_argument("-o", "--output", type=Path, default=Path("evaluation"), help="output folder")
    evaluate.add_argument("--localizer", type=Path, help="localizer model file to score (default: the bundled one)")
    evaluate.add_argument("--xunet", type=Path, help="XUNet model file to score (default: the bundled one)")
    add_run_options(evaluate)

    train = commands.add_parser("train", help="train (or resume) the localizer or the XUNet")
    train.add_argument("network", choices=("localizer", "xunet"))
    train.add_argument("--config", type=Path, help="training config (default: the bundled one)")
    train.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, log)")
    train.add_argument("--data", type=Path, help="real CT folder (default: ../shared/data/realct)")
    train.add_argument("--steps", type=int, help="override the config's step count")
    train.add_argument("--export", type=Path, help="copy the best model here when done")
    train.add_argument("--init-from", type=Path, help="start from this model file (continues its step count)")
    add_run_options(train, progress=False)
    return parser


def add_run_options(parser: argparse.ArgumentParser, *, progress: bool = True) -> None:
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="compute device")
    parser.add_argument("--threads", type=positive_int, help="CPU threads (default: all cores)")
    if progress:
        parser.add_argument("--progress", choices=("bar", "machine", "none"), default="bar",
                            help="progress display: terminal bar, PROGRESS lines for Slicer, or none")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    # OpenMP threads that spin at every barrier stall whenever another program holds a core
    # (Slicer itself, while the user keeps working): 2-5x slower under load. Read once, when
    # torch loads, which is later than this.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser().parse_args(argv)
    from LumbarSegLib.atomic import install_signal_handlers

    restore_signals = install_signal_handlers()
    try:
        return run(args)
    except KeyboardInterrupt:
        return fail(CancelledError("cancelled"))
    except LumbarSegError as error:
        return fail(error)
    except MemoryError:
        return fail(ResourceLimitError("out of memory: the volume is too large for this computer"))
    except Exception as error:  # noqa: BLE001 - last line of defence: one line, no traceback
        if os.environ.get("LUMBARSEG_DEBUG"):
            raise
        print(f"{PROG}: error: internal error ({type(error).__name__}: {error}); "
              "set LUMBARSEG_DEBUG=1 for details", file=sys.stderr)
        return INTERNAL_ERROR
    finally:
        restore_signals()


def fail(error: LumbarSegError) -> int:
    print(f"{PROG}: error: {error}", file=sys.stderr)
    return error.exit_code


def warn(message: str) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    if args.command == "segment":
        return command_segment(args)
    if args.command == "demo":
        from LumbarSegLib.demo import run_demo

        return run_demo(args.output, seed=args.seed, device=args.device, threads=args.threads,
                        progress_mode=args.progress)
    if args.command == "evaluate":
        return command_evaluate(args)
    return command_train(args)


def command_segment(args: argparse.Namespace) -> int:
    from LumbarSegLib.pipeline import SegmentOptions, run_segment
    from LumbarSegLib.progress import Progress

    options = SegmentOptions(device=args.device, threads=args.threads, mesh=args.mesh, preview=args.preview,
                             overwrite=args.overwrite)
    with Progress(args.progress) as progress:
        paths, result = run_segment(args.input, args.output, options, progress=progress)
    for finding in result.findings:
        warn(finding.message)
    if args.progress != "machine":
        for path in paths.values():
            print(path)
    return 0


def command_evaluate(args: argparse.Namespace) -> int:
    from LumbarSegLib.errors import InputError
    from LumbarSegLib.evaluation import (
        evaluate_cases, find_cases, summarize, to_markdown, transitional_summary, write_evaluation,
    )
    from LumbarSegLib.inference import select_device
    from LumbarSegLib.io import read_ct
    from LumbarSegLib.phantom.dataset import write_phantom_cases
    from LumbarSegLib.pipeline import Models, StageTimer, segment_ct, set_threads
    from LumbarSegLib.progress import Progress

    if args.data is None and args.phantoms is None:
        raise InputError("give --data DIR, --phantoms N, or both")
    set_threads(args.threads)
    models = Models.load(select_device(args.device), localizer=args.localizer, xunet=args.xunet)
    quiet = Progress("none")

    def segment_fn(path: Path):
        result = segment_ct(read_ct(path), models, progress=quiet, timer=StageTimer())
        return result.labels, result.report

    datasets = [("real", args.data, {})] if args.data is not None else []
    if args.phantoms:
        folder = args.output / "phantoms"
        datasets.append(("phantoms", folder, write_phantom_cases(folder, count=args.phantoms)))
    for name, folder, variants in datasets:
        with Progress(args.progress) as progress:
            results = evaluate_cases(find_cases(folder), segment_fn, progress=progress.report)
        summary = summarize(results)
        if variants:
            summary["transitional"] = transitional_summary(results, variants)
        markdown_path, json_path = write_evaluation(results, summary, args.output / name)
        print(to_markdown(results, summary))
        print(markdown_path)
        print(json_path)
    return 0


def command_train(args: argparse.Namespace) -> int:
    from LumbarSegLib.training.train import CONFIG_DIR, train

    config = args.config or CONFIG_DIR / f"{args.network}.json"
    train(config_path=config, out_dir=args.out, data_dir=args.data, device_name=args.device, threads=args.threads,
          steps=args.steps, export=args.export, init_from=args.init_from)
    return 0
