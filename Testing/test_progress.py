"""Progress reporting for people and for the Slicer panel."""

from __future__ import annotations

import io

import pytest

from LumbarSegLib.progress import STAGES, Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_machine_lines_are_monotonic_and_end_at_one():
    stream = io.StringIO()
    progress = Progress("machine", stream=stream)
    for stage in STAGES:
        progress.stage(stage)
        progress.stage(stage, 0.5)
    progress.done()
    lines = stream.getvalue().splitlines()
    fractions = [float(line.split()[1]) for line in lines]
    assert all(line.startswith("PROGRESS ") for line in lines)
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert lines[-1] == "PROGRESS 1.000 done"


def test_bar_draws_on_a_terminal_only():
    terminal, log = Terminal(), io.StringIO()
    for stream in (terminal, log):
        progress = Progress("bar", stream=stream)
        progress.stage("segment", 0.5)
        progress.done()
    assert "segment" in terminal.getvalue() and terminal.getvalue().endswith("\n")
    assert log.getvalue() == ""


def test_an_interrupted_bar_ends_its_line_so_the_error_starts_a_new_one():
    terminal = Terminal()
    with pytest.raises(RuntimeError):
        with Progress("bar", stream=terminal) as progress:
            progress.stage("segment", 0.5)
            raise RuntimeError("failed mid-run")
    assert terminal.getvalue().endswith("segment     \n")
    with Progress("bar", stream=terminal) as progress:
        progress.done()
    assert not terminal.getvalue().endswith("\n\n")


def test_unknown_mode():
    with pytest.raises(ValueError):
        Progress("loud")
