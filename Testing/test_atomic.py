"""Tests of LumbarSegLib.atomic: outputs appear complete and together, or the folder stays as it was."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from LumbarSegLib.atomic import OutputTransaction, install_signal_handlers, temporary_name
from LumbarSegLib.errors import CancelledError, OutputExistsError

PROJECT = Path(__file__).resolve().parents[1]


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under folder with its bytes (None for folders)."""
    if not folder.exists():
        return {}
    return {
        os.fspath(p.relative_to(folder)): (None if p.is_dir() else p.read_bytes())
        for p in sorted(folder.rglob("*"))
    }


def write_outputs(outputs: OutputTransaction) -> None:
    outputs.path("case_seg.nii.gz").write_bytes(b"labels")
    outputs.path("case_report.json").write_text("{}")
    meshes = outputs.path("case_meshes")
    meshes.mkdir()
    (meshes / "L1.stl").write_bytes(b"solid L1")


def test_commit_puts_every_output_in_place_and_leaves_no_temporaries(tmp_path):
    with OutputTransaction(tmp_path, overwrite=False) as outputs:
        outputs.check_free(["case_seg.nii.gz", "case_report.json", "case_meshes"])
        write_outputs(outputs)
        assert not (tmp_path / "case_seg.nii.gz").exists()  # nothing final before the commit
    assert snapshot(tmp_path) == {
        "case_meshes": None,
        "case_meshes/L1.stl": b"solid L1",
        "case_report.json": b"{}",
        "case_seg.nii.gz": b"labels",
    }


def test_temporary_names_are_hidden_and_in_the_output_folder(tmp_path):
    outputs = OutputTransaction(tmp_path, overwrite=False)
    temporary = outputs.path("case_seg.nii.gz")
    assert temporary.parent == tmp_path
    assert temporary.name == temporary_name("case_seg.nii.gz") == f".case_seg.tmp-{os.getpid()}.nii.gz"
    outputs.rollback()


@pytest.mark.parametrize("failure", [RuntimeError("disk full"), KeyboardInterrupt(), CancelledError("SIGTERM")])
def test_failure_midway_leaves_the_folder_exactly_as_before(tmp_path, failure):
    (tmp_path / "unrelated.txt").write_text("keep me")
    (tmp_path / "case_report.json").write_text("old report")
    before = snapshot(tmp_path)
    with pytest.raises(type(failure)):
        with OutputTransaction(tmp_path, overwrite=True) as outputs:
            write_outputs(outputs)
            raise failure
    assert snapshot(tmp_path) == before


def test_rollback_removes_an_output_folder_it_created(tmp_path):
    outdir = tmp_path / "new" / "deeper"
    with pytest.raises(RuntimeError):
        with OutputTransaction(outdir, overwrite=False) as outputs:
            write_outputs(outputs)
            raise RuntimeError("boom")
    assert snapshot(tmp_path) == {}


def test_existing_output_is_refused_before_any_work(tmp_path):
    (tmp_path / "case_report.json").write_text("old report")
    before = snapshot(tmp_path)
    outputs = OutputTransaction(tmp_path, overwrite=False)
    with pytest.raises(OutputExistsError) as caught:
        outputs.check_free(["case_seg.nii.gz", "case_report.json"])
    assert caught.value.exit_code == 6
    assert "case_report.json already exists" in str(caught.value) and "--overwrite" in str(caught.value)
    assert snapshot(tmp_path) == before


def test_output_appearing_during_the_run_is_not_overwritten(tmp_path):
    with pytest.raises(OutputExistsError):
        with OutputTransaction(tmp_path, overwrite=False) as outputs:
            outputs.check_free(["case_seg.nii.gz", "case_report.json", "case_meshes"])
            write_outputs(outputs)
            (tmp_path / "case_report.json").write_text("someone else's")
    assert snapshot(tmp_path) == {"case_report.json": b"someone else's"}


def test_overwrite_replaces_files_and_folders(tmp_path):
    (tmp_path / "case_seg.nii.gz").write_bytes(b"old labels")
    (tmp_path / "case_meshes").mkdir()
    (tmp_path / "case_meshes" / "L6.stl").write_bytes(b"old L6")
    with OutputTransaction(tmp_path, overwrite=True) as outputs:
        outputs.check_free(["case_seg.nii.gz", "case_report.json", "case_meshes"])
        write_outputs(outputs)
    assert snapshot(tmp_path) == {
        "case_meshes": None,
        "case_meshes/L1.stl": b"solid L1",
        "case_report.json": b"{}",
        "case_seg.nii.gz": b"labels",
    }


def test_a_failing_rename_restores_every_earlier_output(tmp_path, monkeypatch):
    (tmp_path / "case_seg.nii.gz").write_bytes(b"old labels")
    before = snapshot(tmp_path)
    real_replace = os.replace

    def replace(source, target):
        if Path(target).name == "case_meshes":
            raise OSError("simulated failure")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="simulated"):
        with OutputTransaction(tmp_path, overwrite=True) as outputs:
            write_outputs(outputs)
    monkeypatch.undo()
    assert snapshot(tmp_path) == before


def test_announced_but_unwritten_output_fails_the_commit(tmp_path):
    with pytest.raises(RuntimeError, match="never written"):
        with OutputTransaction(tmp_path, overwrite=False) as outputs:
            outputs.path("case_seg.nii.gz").write_bytes(b"labels")
            outputs.path("case_report.json")
    assert snapshot(tmp_path) == {}


def test_stale_temporaries_of_dead_processes_are_cleaned(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / temporary_name("case_seg.nii.gz", dead_pid)
    stale.write_bytes(b"half written")
    alive = tmp_path / temporary_name("case_seg.nii.gz", os.getppid())  # a running process: not ours to touch
    alive.write_bytes(b"someone else's run")
    OutputTransaction(tmp_path, overwrite=False).check_free(["case_seg.nii.gz"])
    assert not stale.exists() and alive.exists()


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../x"])
def test_names_must_be_plain_file_names(tmp_path, name):
    with pytest.raises(ValueError):
        OutputTransaction(tmp_path, overwrite=False).path(name)


def test_sigterm_handler_raises_cancelled_and_restores(tmp_path):
    previous = signal.getsignal(signal.SIGTERM)
    restore = install_signal_handlers()
    try:
        with pytest.raises(CancelledError) as caught:
            with OutputTransaction(tmp_path, overwrite=False) as outputs:
                write_outputs(outputs)
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the handler interrupts this sleep
        assert caught.value.exit_code == 130
    finally:
        restore()
    assert signal.getsignal(signal.SIGTERM) is previous
    assert snapshot(tmp_path) == {}


CHILD = textwrap.dedent(
    """
    import signal, sys, time
    from pathlib import Path
    from LumbarSegLib.atomic import OutputTransaction, install_signal_handlers
    from LumbarSegLib.errors import CancelledError

    install_signal_handlers()
    # A parent started in the background (nohup, CI runners) may hand SIGINT down as ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    outdir = Path(sys.argv[1])
    try:
        with OutputTransaction(outdir, overwrite=True) as outputs:
            outputs.check_free(["case_seg.nii.gz", "case_meshes"])
            with open(outputs.path("case_seg.nii.gz"), "wb") as stream:
                stream.write(b"x" * 100000)
                stream.flush()
                meshes = outputs.path("case_meshes")
                meshes.mkdir()
                (meshes / "L1.stl").write_bytes(b"solid")
                print("WRITING", flush=True)
                time.sleep(60)
    except (CancelledError, KeyboardInterrupt) as error:
        sys.exit(130)
    """
)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_killed_child_leaves_no_partial_files(tmp_path, signum):
    outdir = tmp_path / "out"
    outdir.mkdir()
    (outdir / "case_seg.nii.gz").write_bytes(b"previous result")
    before = snapshot(outdir)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, os.fspath(outdir)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([os.fspath(PROJECT), os.environ.get("PYTHONPATH", "")])},
    )
    try:
        assert child.stdout.readline().strip() == "WRITING"
        assert (outdir / temporary_name("case_seg.nii.gz", child.pid)).exists()  # mid-write: the partial file exists
        child.send_signal(signum)
        assert child.wait(timeout=30) == 130
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert snapshot(outdir) == before
