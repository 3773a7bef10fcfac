"""Write outputs atomically: each under a hidden temporary name in the output folder, all renamed at the end.

A run either leaves every output complete or the output folder exactly as it was: on an exception,
Ctrl-C (``KeyboardInterrupt``) or SIGTERM (turned into :class:`CancelledError` by
:func:`install_signal_handlers`) every temporary file is removed.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import threading
from pathlib import Path
from types import FrameType, TracebackType
from typing import Callable, Iterable, Iterator

from LumbarSegLib.errors import CancelledError, OutputExistsError

_TEMP_MARK = ".tmp-"
_ASIDE_MARK = ".old-"


# Writers pick the file format from the extension (SimpleITK refuses a NIfTI name without one),
# so the temporary name keeps it: "case_seg.nii.gz" is written as ".case_seg.tmp-<pid>.nii.gz".
KNOWN_EXTENSIONS = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha", ".json", ".png", ".md")


def split_extension(name: str) -> tuple[str, str]:
    """``name`` as (base, known extension or "")."""
    for extension in KNOWN_EXTENSIONS:
        if name.endswith(extension) and len(name) > len(extension):
            return name[: -len(extension)], extension
    return name, ""


def temporary_name(name: str, pid: int | None = None) -> str:
    """The hidden name an output is written under before it is renamed to ``name``."""
    base, extension = split_extension(name)
    return f".{base}{_TEMP_MARK}{os.getpid() if pid is None else pid}{extension}"


class OutputTransaction:
    """Collect several outputs written under temporary names; commit them all or remove them all.

    Usage::

        with OutputTransaction(outdir, overwrite=False) as outputs:
            outputs.check_free(["case_seg.nii.gz", "case_report.json"])
            sitk.WriteImage(labels, str(outputs.path("case_seg.nii.gz")))
            ...
        # leaving the block normally commits; an exception (or Ctrl-C / SIGTERM) rolls back
    """

    def __init__(self, outdir: str | os.PathLike[str], *, overwrite: bool) -> None:
        self.outdir = Path(outdir)
        self.overwrite = overwrite
        self._pending: dict[str, Path] = {}
        self._created_dirs: list[Path] = []

    def __enter__(self) -> OutputTransaction:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.rollback()

    def check_free(self, names: Iterable[str]) -> None:
        """Refuse up front (before any work) if an output exists and overwriting was not asked for.

        Also removes temporaries of these names left by an earlier run that was killed outright.
        """
        names = [_checked_name(n) for n in names]
        if self.outdir.exists() and not self.outdir.is_dir():
            raise OutputExistsError(f"{self.outdir}: exists and is not a folder")
        if not self.outdir.is_dir():
            return
        _remove_stale_temporaries(self.outdir, names)
        existing = [n for n in names if _exists(self.outdir / n)]
        if existing and not self.overwrite:
            raise OutputExistsError(_exists_message(self.outdir, existing))

    def path(self, name: str) -> Path:
        """Return the temporary path to write output ``name`` to (a file, or a folder the caller creates)."""
        name = _checked_name(name)
        self._ensure_outdir()
        temporary = self.outdir / temporary_name(name)
        _remove(temporary)
        self._pending[name] = temporary
        return temporary

    def commit(self) -> None:
        """Rename every temporary output to its final name; on any failure restore the folder and re-raise."""
        with _signals_deferred():
            try:
                self._commit()
            except BaseException:
                self.rollback()
                raise

    def rollback(self) -> None:
        """Delete every temporary output (and folders this transaction created); safe to call twice."""
        for temporary in self._pending.values():
            _remove(temporary)
        self._pending.clear()
        for folder in reversed(self._created_dirs):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if still empty
        self._created_dirs.clear()

    def _commit(self) -> None:
        missing = [name for name, temporary in self._pending.items() if not _exists(temporary)]
        if missing:
            raise RuntimeError(f"output {missing[0]} was announced but never written")
        existing = [name for name in self._pending if _exists(self.outdir / name)]
        if existing and not self.overwrite:
            raise OutputExistsError(_exists_message(self.outdir, existing))
        set_aside: dict[str, Path] = {}
        placed: list[str] = []
        try:
            for name, temporary in self._pending.items():
                final = self.outdir / name
                if _exists(final):
                    aside = self.outdir / f".{name}{_ASIDE_MARK}{os.getpid()}"
                    _remove(aside)
                    os.replace(final, aside)
                    set_aside[name] = aside
                os.replace(temporary, final)
                placed.append(name)
        except BaseException:
            for name in reversed(placed):
                os.replace(self.outdir / name, self._pending[name])
            for name, aside in set_aside.items():
                os.replace(aside, self.outdir / name)
            raise
        for aside in set_aside.values():
            _remove(aside)
        self._pending.clear()
        self._created_dirs.clear()

    def _ensure_outdir(self) -> None:
        missing = []
        folder = self.outdir.absolute()
        while not folder.exists():
            missing.append(folder)
            folder = folder.parent
        self.outdir.mkdir(parents=True, exist_ok=True)
        self._created_dirs.extend(reversed(missing))


def install_signal_handlers() -> Callable[[], None]:
    """Make SIGTERM (and SIGHUP where it exists) raise :class:`CancelledError` in the main thread.

    The exception unwinds through ``with OutputTransaction(...)`` exactly like Ctrl-C does, so no
    partial output is left. Returns a function that restores the previous handlers.
    """

    def cancel(signum: int, frame: FrameType | None) -> None:
        raise CancelledError(f"cancelled by {signal.Signals(signum).name}")

    names = ("SIGTERM", "SIGHUP")
    previous = {
        getattr(signal, n): signal.signal(getattr(signal, n), cancel) for n in names if hasattr(signal, n)
    }

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    return restore


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back while renaming, so a commit is never left half done."""
    can_block = hasattr(signal, "pthread_sigmask") and threading.current_thread() is threading.main_thread()
    if not can_block:
        yield
        return
    blocked = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _checked_name(name: str) -> str:
    if not name or name in (".", "..") or "/" in name or os.sep in name or (os.altsep and os.altsep in name):
        raise ValueError(f"not a plain file name: {name!r}")
    return name


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _exists_message(outdir: Path, existing: list[str]) -> str:
    more = f" (and {len(existing) - 1} more outputs)" if len(existing) > 1 else ""
    return f"{outdir / existing[0]} already exists{more}; use --overwrite to replace it"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _remove_stale_temporaries(outdir: Path, names: list[str]) -> None:
    """Delete temporaries (``temporary_name``) left by a process that no longer runs (killed with SIGKILL)."""
    for name in names:
        base, extension = split_extension(name)
        prefix = f".{base}{_TEMP_MARK}"
        for candidate in outdir.glob(glob.escape(prefix) + "*" + glob.escape(extension)):
            pid_text = candidate.name[len(prefix) : len(candidate.name) - len(extension)]
            if pid_text.isdigit() and int(pid_text) != os.getpid() and not _pid_alive(int(pid_text)):
                _remove(candidate)


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":
        return True  # os.kill(pid, 0) is not a harmless probe on Windows: never delete there
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
