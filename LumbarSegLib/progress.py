"""Progress reporting: a terminal bar for people, ``PROGRESS`` lines for the Slicer panel."""

from __future__ import annotations

import sys
from typing import TextIO

# Share of the total run time each stage takes, measured on CPU (bench/).
STAGE_SHARE: dict[str, float] = {
    "read": 0.05,
    "normalise": 0.05,
    "localize": 0.10,
    "segment": 0.60,
    "postprocess": 0.05,
    "restore": 0.05,
    "write": 0.10,
}
STAGES = tuple(STAGE_SHARE)


class Progress:
    """Reports the fraction of a pipeline run done.

    Args:
        mode: ``bar`` (a bar on stderr when it is a terminal, silent otherwise,
            so logs and error output stay clean), ``machine`` (``PROGRESS <fraction> <stage>`` on stdout,
            flushed) or ``none``.
    """

    def __init__(self, mode: str = "bar", *, stream: TextIO | None = None) -> None:
        if mode not in ("bar", "machine", "none"):
            raise ValueError(f"unknown progress mode {mode!r}")
        self.mode = mode
        self.stream = stream or (sys.stdout if mode == "machine" else sys.stderr)
        self._bar_open = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """End an unfinished bar line, so that whatever is printed next starts on its own line."""
        if self._bar_open:
            self.stream.write("\n")
            self.stream.flush()
            self._bar_open = False

    def stage(self, name: str, within: float = 0.0) -> None:
        """Report that stage ``name`` is ``within`` (0..1) done."""
        done = sum(STAGE_SHARE[s] for s in STAGES[: STAGES.index(name)]) + STAGE_SHARE[name] * within
        self.report(done, name)

    def report(self, fraction: float, stage: str) -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        if self.mode == "machine":
            self.stream.write(f"PROGRESS {fraction:.3f} {stage}\n")
        elif self.mode == "bar" and self.stream.isatty():
            filled = int(round(30 * fraction))
            end = "\n" if stage == "done" else ""
            self.stream.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {fraction * 100:5.1f}% {stage:<12}{end}")
            self._bar_open = not end
        self.stream.flush()

    def done(self) -> None:
        self.report(1.0, "done")
