"""Everything the Slicer module needs that does not need Slicer.

The Slicer module (``LumbarSeg/LumbarSeg.py``) runs the pipeline in a background
process (``python -m LumbarSegLib segment ...``) and keeps only Slicer calls for
itself.  This module builds that command, parses its ``PROGRESS`` and error
lines, runs and cancels the process tree without blocking the caller, finds the
result files, reads the report and probes PyTorch in a child process.  It never
imports slicer, qt or (at import time) torch.
"""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence, Union

from . import errors

DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
MESH_FORMATS: tuple[str, ...] = ("stl", "obj", "vtp")
PROGRESS_PREFIX = "PROGRESS"
ERROR_PREFIX = "lumbarseg: error:"
WARNING_PREFIX = "lumbarseg: warning:"
# What the child needs beyond Slicer's bundled numpy, SimpleITK and vtk (pip specifiers).
SLICER_REQUIREMENTS: tuple[str, ...] = ("torch>=2.0", "scipy", "slicerio")



# --------------------------------------------------------------------------- command


def build_segment_command(
    python_executable: str,
    input_path: Union[str, Path],
    output_dir: Union[str, Path],
    *,
    device: str = "auto",
    threads: Optional[int] = None,
    mesh: Optional[str] = None,
    preview: bool = False,
) -> list[str]:
    """Command line that segments ``input_path`` into ``output_dir`` with machine progress.

    Args:
        python_executable: Python that can import LumbarSegLib (PythonSlicer in Slicer).
        input_path: volume file or DICOM folder.
        output_dir: folder for the outputs (created by the pipeline).
        device: ``auto``, ``cpu`` or ``cuda`` (case-insensitive).
        threads: CPU threads for the pipeline, or None for its default.
        mesh: surface format per vertebra (``stl``, ``obj``, ``vtp``), or None for no meshes.
        preview: also write the PNG preview.

    Raises:
        ValueError: on an unknown device or mesh format, or threads < 1.
    """
    device = device.lower()
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, not {device!r}")
    command = [
        str(python_executable), "-m", "LumbarSegLib", "segment", str(input_path),
        "-o", str(output_dir), "--progress", "machine", "--overwrite", "--device", device,
    ]
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, not {threads}")
        command += ["--threads", str(threads)]
    if mesh is not None:
        if mesh not in MESH_FORMATS:
            raise ValueError(f"mesh must be one of {', '.join(MESH_FORMATS)}, not {mesh!r}")
        command += ["--mesh", mesh]
    if preview:
        command.append("--preview")
    return command


def child_environment(base: Mapping[str, str], module_root: Union[str, Path]) -> dict[str, str]:
    """Environment for the child: ``module_root`` first on PYTHONPATH, unbuffered UTF-8 output."""
    env = dict(base)
    existing = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(module_root) + (os.pathsep + existing if existing else "")
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    return env


# --------------------------------------------------------------------------- outputs


def expected_outputs(output_dir: Union[str, Path], stem: str) -> dict[str, Path]:
    """Paths of the pipeline's outputs for ``stem`` (see docs/ARCHITECTURE.md).

    Returns:
        Keys ``segmentation`` (``<stem>.seg.nrrd``), ``labelmap`` (``<stem>_seg.nii.gz``),
        ``report`` (``<stem>_report.json``), ``meshes`` (folder) and ``preview`` (PNG).
    """
    out = Path(output_dir)
    return {
        "segmentation": out / f"{stem}.seg.nrrd",
        "labelmap": out / f"{stem}_seg.nii.gz",
        "report": out / f"{stem}_report.json",
        "meshes": out / f"{stem}_meshes",
        "preview": out / f"{stem}_preview.png",
    }


def read_report(path: Union[str, Path]) -> dict:
    """Read the JSON report.

    Raises:
        FileNotFoundError: when the report does not exist.
        ValueError: when it is not a JSON object.
    """
    with open(path, encoding="utf-8") as file:
        report = json.load(file)
    if not isinstance(report, dict):
        raise ValueError(f"{path}: the report is not a JSON object")
    return report


def _scalar_text(value: object) -> Optional[str]:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (int, str)):
        return str(value)
    return None


def report_table(report: Mapping) -> tuple[list[str], list[list[str]]]:
    """Per-vertebra table of the report's scalar values, for display.

    ``report["vertebrae"]`` may be a list of objects (each with a ``level`` or
    ``name``) or an object keyed by level.  Nested values are left out.

    Returns:
        Column names (``level`` first) and one row of texts per vertebra.
    """
    vertebrae = report.get("vertebrae") or []
    if isinstance(vertebrae, Mapping):
        records = [{"level": level, **dict(stats)} for level, stats in vertebrae.items()]
    else:
        records = [dict(item) for item in vertebrae]
    columns = ["level"]
    for record in records:
        if "level" not in record and "name" in record:
            record["level"] = record["name"]
        for key, value in record.items():
            if key not in columns and key != "name" and _scalar_text(value) is not None:
                columns.append(key)
    rows = [[_scalar_text(record.get(column)) or "" for column in columns] for record in records]
    return columns, rows


def report_flags(report: Mapping) -> list[str]:
    """Warnings of the report (e.g. transitional anatomy) as display texts."""
    flags = report.get("flags") or []
    texts = []
    for flag in flags:
        if isinstance(flag, Mapping):
            texts.append(str(flag.get("message") or flag.get("code") or flag))
        else:
            texts.append(str(flag))
    return texts


def describe_exit_code(code: int) -> str:
    """One-line meaning of a pipeline exit code (from ``errors.py``)."""
    if code == 0:
        return "Finished."
    if code == 2:
        return "Invalid command line."
    for cls in (errors.InputError, errors.NoSpineError, errors.ResourceLimitError,
                errors.OutputExistsError, errors.ModelError, errors.CancelledError):
        if cls.exit_code == code:
            return (cls.__doc__ or cls.__name__).strip().splitlines()[0]
    if code < 0:
        return f"Stopped by signal {-code}."
    return f"Internal error (exit code {code})."


# --------------------------------------------------------------------------- progress lines


@dataclass(frozen=True)
class Progress:
    """A ``PROGRESS <fraction> <stage>`` line."""

    fraction: float
    stage: str


@dataclass(frozen=True)
class Diagnostic:
    """A ``lumbarseg: error: ...`` or ``lumbarseg: warning: ...`` line."""

    level: str
    message: str


ProgressUpdate = Union[Progress, Diagnostic]


def parse_progress_line(line: str) -> Optional[ProgressUpdate]:
    """Parse one output line of the pipeline; None for any other line.

    Fractions are clamped to 0..1; a malformed PROGRESS line is ignored.
    """
    text = line.strip()
    for prefix, level in ((ERROR_PREFIX, "error"), (WARNING_PREFIX, "warning")):
        if text.startswith(prefix):
            return Diagnostic(level, text[len(prefix):].strip())
    parts = text.split(maxsplit=2)
    if len(parts) < 2 or parts[0] != PROGRESS_PREFIX:
        return None
    try:
        fraction = float(parts[1])
    except ValueError:
        return None
    if fraction != fraction:  # NaN
        return None
    return Progress(min(1.0, max(0.0, fraction)), parts[2].strip() if len(parts) > 2 else "")


# --------------------------------------------------------------------------- process


@dataclass(frozen=True)
class OutputLine:
    """One line the child wrote, with its parsed meaning (if any)."""

    stream: str
    text: str
    update: Optional[ProgressUpdate]


@dataclass(frozen=True)
class Finished:
    """The child and its process tree are gone.

    ``status`` is ``succeeded``, ``failed``, ``cancelled`` or ``timed out``;
    ``error`` is the message to show (None on success).
    """

    returncode: int
    status: str
    error: Optional[str]


Event = Union[OutputLine, Finished]

_IS_WINDOWS = sys.platform == "win32"
_AFTER_KILL_WAIT = 2.0  # seconds to wait for pipes and group members after SIGKILL


class SegmentationProcess:
    """A child process whose output is read without blocking and whose tree can be killed.

    The child starts in its own session (POSIX) or process group (Windows) so that
    cancelling also ends whatever it started (PythonSlicer is a launcher that starts
    the real interpreter as a grandchild).  Two reader threads put the output lines in
    a queue; :meth:`poll` drains it and is meant to be called from a GUI timer.  The
    timeout and the SIGTERM -> SIGKILL escalation are enforced by :meth:`poll` (and so
    by :meth:`wait`).
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[Union[str, Path]] = None,
        timeout: Optional[float] = None,
        kill_grace: float = 5.0,
    ):
        self.command = [str(part) for part in command]
        self.env = dict(env) if env is not None else None
        self.cwd = str(cwd) if cwd is not None else None
        self.timeout = timeout
        self.kill_grace = kill_grace
        self.log: list[OutputLine] = []
        self.finished: Optional[Finished] = None
        self._proc: Optional[subprocess.Popen] = None
        self._queue: queue.Queue = queue.Queue()
        self._open_streams = 0
        self._started_at = 0.0
        self._stop_reason: Optional[str] = None
        self._kill_at: Optional[float] = None
        self._killed_at: Optional[float] = None
        self._exited_at: Optional[float] = None
        self._last_error: Optional[str] = None

    # -- state

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self.finished is None

    @property
    def returncode(self) -> Optional[int]:
        return self.finished.returncode if self.finished else None

    @property
    def error_message(self) -> Optional[str]:
        return self.finished.error if self.finished else None

    # -- control

    def start(self) -> None:
        """Start the child.

        Raises:
            RuntimeError: if already started.
            OSError: if the executable cannot be run.
        """
        if self._proc is not None:
            raise RuntimeError("the process was already started")
        if _IS_WINDOWS:
            # No console window for PythonSlicer.exe started from the Slicer GUI.
            group = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW}
        else:
            group = {"start_new_session": True}
        self._proc = subprocess.Popen(
            self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=self.env, cwd=self.cwd, text=True, encoding="utf-8", errors="replace", bufsize=1,
            **group,
        )
        self._started_at = time.monotonic()
        for name, stream in (("stdout", self._proc.stdout), ("stderr", self._proc.stderr)):
            self._open_streams += 1
            threading.Thread(target=self._read, args=(name, stream), daemon=True).start()

    def cancel(self) -> None:
        """Ask the process tree to stop (SIGTERM now, SIGKILL after ``kill_grace`` s).

        Returns at once; :meth:`poll` or :meth:`wait` report the end.
        """
        self._stop("cancelled")

    def poll(self) -> list[Event]:
        """New output lines since the last call, then one :class:`Finished` at the end."""
        if self._proc is None or self.finished is not None:
            return []
        events: list[Event] = self._drain()
        now = time.monotonic()
        if self.timeout is not None and self._stop_reason is None and now - self._started_at > self.timeout:
            self._stop("timed out")
        if self._kill_at is not None and self._killed_at is None and now >= self._kill_at:
            self._kill_tree()
        returncode = self._proc.poll()
        if returncode is None:
            return events
        if self._exited_at is None:
            self._exited_at = now
        if self._open_streams and self._killed_at is None and now - self._exited_at > 1.0:
            self._kill_tree()  # orphans of the child still hold the pipes
        if not self._tree_done(now):
            return events
        events += self._drain()
        self.finished = self._result(returncode)
        events.append(self.finished)
        return events

    def wait(self, *, callback: Optional[Callable[[list[Event]], None]] = None,
             interval: float = 0.1) -> Finished:
        """Poll until the tree is gone; ``callback`` gets each batch of events."""
        if self._proc is None:
            raise RuntimeError("the process was not started")
        while True:
            events = self.poll()
            if callback is not None and events:
                callback(events)
            if self.finished is not None:
                return self.finished
            time.sleep(interval)

    # -- internals

    def _read(self, name: str, stream) -> None:
        try:
            for line in iter(stream.readline, ""):
                self._queue.put((name, line.rstrip("\r\n")))
        finally:
            stream.close()
            self._queue.put((name, None))

    def _drain(self) -> list[Event]:
        events: list[Event] = []
        while True:
            try:
                name, text = self._queue.get_nowait()
            except queue.Empty:
                return events
            if text is None:
                self._open_streams -= 1
                continue
            update = parse_progress_line(text)
            if isinstance(update, Diagnostic) and update.level == "error":
                self._last_error = update.message
            line = OutputLine(name, text, update)
            self.log.append(line)
            events.append(line)

    def _stop(self, reason: str) -> None:
        if self._proc is None or self.finished is not None or self._stop_reason is not None:
            return
        self._stop_reason = reason
        if _IS_WINDOWS:
            self._kill_tree()
            return
        self._signal_group(signal.SIGTERM)
        self._kill_at = time.monotonic() + self.kill_grace

    def _kill_tree(self) -> None:
        self._killed_at = time.monotonic()
        if _IS_WINDOWS:
            subprocess.run(["taskkill", "/PID", str(self._proc.pid), "/T", "/F"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        else:
            self._signal_group(signal.SIGKILL)

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self._proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _group_alive(self) -> bool:
        if _IS_WINDOWS:
            return False  # taskkill /T already ended the tree
        try:
            os.killpg(self._proc.pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def _tree_done(self, now: float) -> bool:
        after_kill = self._killed_at is not None and now - self._killed_at > _AFTER_KILL_WAIT
        if self._open_streams and not after_kill:
            return False
        if self._stop_reason is not None and self._group_alive() and not after_kill:
            return False
        return True

    def _result(self, returncode: int) -> Finished:
        if self._stop_reason == "cancelled":
            return Finished(returncode, "cancelled", "Cancelled.")
        if self._stop_reason == "timed out":
            return Finished(returncode, "timed out", f"Stopped after the time limit of {self.timeout:g} s.")
        if returncode == 0:
            return Finished(returncode, "succeeded", None)
        if self._last_error:
            return Finished(returncode, "failed", self._last_error)
        stderr = [line.text for line in self.log if line.stream == "stderr" and line.text.strip()]
        detail = f" Last message: {stderr[-1].strip()}" if stderr else ""
        return Finished(returncode, "failed", describe_exit_code(returncode) + detail)


# --------------------------------------------------------------------------- dependencies


def requirement_name(requirement: str) -> str:
    """Import name of a simple pip specifier such as ``torch>=2.0``."""
    name = requirement
    for separator in "<>=!~[; ":
        name = name.split(separator, 1)[0]
    return name.strip().replace("-", "_").lower()


def missing_requirements(requirements: Sequence[str] = SLICER_REQUIREMENTS) -> list[str]:
    """The specifiers whose package cannot be found (checked without importing it)."""
    return [req for req in requirements if importlib.util.find_spec(requirement_name(req)) is None]


# --------------------------------------------------------------------------- torch


@dataclass(frozen=True)
class TorchStatus:
    """Whether PyTorch can be imported, its version, and whether CUDA works."""

    installed: bool
    version: Optional[str]
    cuda_available: bool


_TORCH_PROBE = (
    "import json, torch; "
    "print(json.dumps({'version': torch.__version__, 'cuda': bool(torch.cuda.is_available())}))"
)


def torch_probe_command(python_executable: str) -> list[str]:
    """Command that prints one JSON line with torch's version and CUDA availability."""
    return [str(python_executable), "-c", _TORCH_PROBE]


def parse_torch_probe(stdout: str) -> TorchStatus:
    """Status from the probe's output; not installed when there is no JSON line."""
    for line in reversed(stdout.splitlines()):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and "version" in data:
            return TorchStatus(True, str(data["version"]), bool(data.get("cuda")))
    return TorchStatus(False, None, False)


def torch_status(python_executable: Optional[str] = None, *, timeout: float = 300.0) -> TorchStatus:
    """PyTorch status of this interpreter (lazy import) or of ``python_executable`` (child process).

    Slicer passes its PythonSlicer so that torch is never imported in the Slicer process.
    """
    if python_executable is None:
        if importlib.util.find_spec("torch") is None:
            return TorchStatus(False, None, False)
        import torch

        return TorchStatus(True, torch.__version__, bool(torch.cuda.is_available()))
    try:
        result = subprocess.run(torch_probe_command(python_executable), capture_output=True,
                                text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return TorchStatus(False, None, False)
    return parse_torch_probe(result.stdout) if result.returncode == 0 else TorchStatus(False, None, False)


def cuda_available(python_executable: Optional[str] = None) -> bool:
    """Whether PyTorch sees a CUDA device (see :func:`torch_status`)."""
    return torch_status(python_executable).cuda_available


