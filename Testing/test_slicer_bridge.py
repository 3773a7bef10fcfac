"""Tests of LumbarSegLib.slicer_bridge with real child processes (no Slicer needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from LumbarSegLib import slicer_bridge as sb
from LumbarSegLib.terminology import TERMINOLOGY_LEVELS

REPO = Path(__file__).resolve().parents[1]
POSIX = sys.platform != "win32"


def script(code: str) -> list[str]:
    """Command running ``code`` in a fresh Python."""
    return [sys.executable, "-c", textwrap.dedent(code)]


def pid_running(pid: int) -> bool:
    """Whether ``pid`` is a live process (zombies count as gone)."""
    stat = Path(f"/proc/{pid}/stat")
    if stat.parent.parent.is_dir() and Path("/proc/self").exists():
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (FileNotFoundError, ProcessLookupError):
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_for_file(path: Path, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.05)
    raise AssertionError(f"{path} was not written")


# --------------------------------------------------------------------------- command


def test_build_segment_command_contract():
    command = sb.build_segment_command("/opt/PythonSlicer", "/tmp/in put.nrrd", "/tmp/out",
                                       device="CUDA", threads=4, mesh="stl", preview=True)
    assert command == [
        "/opt/PythonSlicer", "-m", "LumbarSegLib", "segment", "/tmp/in put.nrrd",
        "-o", "/tmp/out", "--progress", "machine", "--overwrite", "--device", "cuda",
        "--threads", "4", "--mesh", "stl", "--preview",
    ]


def test_build_segment_command_defaults_and_errors():
    command = sb.build_segment_command("python", Path("a.nrrd"), Path("out"))
    assert command[-2:] == ["--device", "auto"]
    assert "--mesh" not in command and "--preview" not in command and "--threads" not in command
    with pytest.raises(ValueError, match="device"):
        sb.build_segment_command("python", "a", "b", device="tpu")
    with pytest.raises(ValueError, match="mesh"):
        sb.build_segment_command("python", "a", "b", mesh="ply")
    with pytest.raises(ValueError, match="threads"):
        sb.build_segment_command("python", "a", "b", threads=0)


def test_child_environment_puts_module_root_first():
    env = sb.child_environment({"PYTHONPATH": "/x", "HOME": "/h"}, "/mod")
    assert env["PYTHONPATH"] == os.pathsep.join(["/mod", "/x"])
    assert env["HOME"] == "/h" and env["PYTHONUNBUFFERED"] == "1"
    assert sb.child_environment({}, "/mod")["PYTHONPATH"] == "/mod"


def test_child_environment_makes_package_importable(tmp_path):
    env = sb.child_environment({k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, REPO)
    result = subprocess.run([sys.executable, "-c", "import LumbarSegLib, sys; print(LumbarSegLib.__file__)"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert Path(result.stdout.strip()).parent == REPO / "LumbarSegLib"


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("line, expected", [
    ("PROGRESS 0.25 localize", sb.Progress(0.25, "localize")),
    ("PROGRESS 1 done\n", sb.Progress(1.0, "done")),
    ("PROGRESS 1.7 write", sb.Progress(1.0, "write")),
    ("PROGRESS -0.1 read", sb.Progress(0.0, "read")),
    ("PROGRESS 0.5", sb.Progress(0.5, "")),
    ("lumbarseg: error: no lumbar spine found", sb.Diagnostic("error", "no lumbar spine found")),
    ("lumbarseg: warning: L6 present (transitional)", sb.Diagnostic("warning", "L6 present (transitional)")),
    ("PROGRESS abc read", None),
    ("PROGRESS nan read", None),
    ("PROGRESSIVE 0.5 x", None),
    ("Traceback (most recent call last):", None),
    ("", None),
])
def test_parse_progress_line(line, expected):
    assert sb.parse_progress_line(line) == expected


@pytest.mark.parametrize("code, fragment", [
    (0, "Finished"), (3, "not a usable CT"), (4, "No lumbar spine"), (5, "memory"),
    (7, "Model weights"), (130, "cancelled"), (2, "command line"), (1, "exit code 1"), (-9, "signal 9"),
])
def test_describe_exit_code(code, fragment):
    assert fragment in sb.describe_exit_code(code)


# --------------------------------------------------------------------------- outputs


def test_expected_outputs(tmp_path):
    outputs = sb.expected_outputs(tmp_path, "volume")
    assert outputs["segmentation"] == tmp_path / "volume.seg.nrrd"
    assert outputs["labelmap"] == tmp_path / "volume_seg.nii.gz"
    assert outputs["report"] == tmp_path / "volume_report.json"
    assert outputs["meshes"] == tmp_path / "volume_meshes"
    assert outputs["preview"] == tmp_path / "volume_preview.png"


def test_read_report_and_table(tmp_path):
    report = {
        "vertebrae": [
            {"level": "L1", "volume_ml": 31.25, "mean_hu": 210.0, "centroid_ras": [1, 2, 3]},
            {"level": "L2", "volume_ml": 35.5, "mean_hu": 205.125, "touches_border": True},
        ],
        "flags": [{"code": "transitional", "message": "Possible lumbarisation of S1"}, "low contrast"],
    }
    path = tmp_path / "r.json"
    path.write_text(json.dumps(report))
    loaded = sb.read_report(path)
    assert loaded == report
    columns, rows = sb.report_table(loaded)
    assert columns == ["level", "volume_ml", "mean_hu", "touches_border"]
    assert rows == [["L1", "31.25", "210", ""], ["L2", "35.5", "205.1", "yes"]]
    assert sb.report_flags(loaded) == ["Possible lumbarisation of S1", "low contrast"]


def test_report_table_keyed_by_level():
    columns, rows = sb.report_table({"vertebrae": {"L4": {"volume_ml": 40}, "L5": {"volume_ml": 42}}})
    assert columns == ["level", "volume_ml"] and rows == [["L4", "40"], ["L5", "42"]]
    assert sb.report_table({}) == (["level"], []) and sb.report_flags({}) == []


def test_read_report_rejects_non_object(tmp_path):
    path = tmp_path / "r.json"
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a JSON object"):
        sb.read_report(path)
    with pytest.raises(FileNotFoundError):
        sb.read_report(tmp_path / "missing.json")


# --------------------------------------------------------------------------- process


def test_progress_lines_stream_then_success():
    process = sb.SegmentationProcess(script("""
        import sys, time
        for fraction, stage in ((0.1, "read"), (0.5, "segment"), (1.0, "done")):
            print(f"PROGRESS {fraction} {stage}", flush=True)
            time.sleep(0.05)
        print("lumbarseg: warning: L6 present", file=sys.stderr, flush=True)
        print("plain log line")
    """))
    process.start()
    seen = []
    finished = process.wait(callback=seen.extend, interval=0.02)
    assert finished == sb.Finished(0, "succeeded", None)
    assert process.returncode == 0 and process.error_message is None and not process.running
    progress = [e.update for e in seen if isinstance(e, sb.OutputLine) and isinstance(e.update, sb.Progress)]
    assert progress == [sb.Progress(0.1, "read"), sb.Progress(0.5, "segment"), sb.Progress(1.0, "done")]
    assert sb.OutputLine("stderr", "lumbarseg: warning: L6 present",
                         sb.Diagnostic("warning", "L6 present")) in process.log
    assert sb.OutputLine("stdout", "plain log line", None) in process.log
    assert seen[-1] is finished and process.poll() == []


def test_poll_does_not_block():
    process = sb.SegmentationProcess(script("import time; time.sleep(30)"))
    process.start()
    try:
        started = time.monotonic()
        assert process.poll() == []
        assert time.monotonic() - started < 1.0 and process.running
    finally:
        process.cancel()
        process.wait()


def test_failing_child_surfaces_its_error_line():
    process = sb.SegmentationProcess(script("""
        import sys
        print("PROGRESS 0.1 read", flush=True)
        print("lumbarseg: error: no lumbar spine found in the field of view", file=sys.stderr)
        sys.exit(4)
    """))
    process.start()
    finished = process.wait(interval=0.02)
    assert finished == sb.Finished(4, "failed", "no lumbar spine found in the field of view")


def test_failing_child_without_error_line_gets_exit_code_meaning():
    process = sb.SegmentationProcess(script("raise SystemExit('boom: weights missing')"))
    process.start()
    finished = process.wait(interval=0.02)
    assert finished.status == "failed" and finished.returncode == 1
    assert "exit code 1" in finished.error and "boom: weights missing" in finished.error


def test_missing_executable_raises():
    process = sb.SegmentationProcess(["/nonexistent/PythonSlicer", "-m", "LumbarSegLib"])
    with pytest.raises(OSError):
        process.start()


def test_start_twice_and_wait_unstarted_raise():
    process = sb.SegmentationProcess(script("pass"))
    with pytest.raises(RuntimeError):
        process.wait()
    process.start()
    with pytest.raises(RuntimeError):
        process.start()
    assert process.wait().status == "succeeded"


@pytest.mark.skipif(not POSIX, reason="process groups are POSIX; Windows uses taskkill /T")
@pytest.mark.parametrize("grandchild_ignores_sigterm", [False, True])
def test_cancel_kills_child_and_grandchild(tmp_path, grandchild_ignores_sigterm):
    pid_file = tmp_path / "grandchild.pid"
    grandchild = (
        "import signal, time; "
        + ("signal.signal(signal.SIGTERM, signal.SIG_IGN); " if grandchild_ignores_sigterm else "")
        + "time.sleep(60)"
    )
    process = sb.SegmentationProcess(script(f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", {grandchild!r}])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        print("PROGRESS 0.2 segment", flush=True)
        child.wait()
    """), kill_grace=0.5)
    process.start()
    grandchild_pid = int(wait_for_file(pid_file))
    child_pid = process.pid
    assert pid_running(grandchild_pid) and pid_running(child_pid)
    process.cancel()
    finished = process.wait(interval=0.05)
    assert finished.status == "cancelled" and finished.error == "Cancelled."
    assert finished.returncode != 0
    assert not pid_running(child_pid)
    deadline = time.monotonic() + 5
    while pid_running(grandchild_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_running(grandchild_pid)


@pytest.mark.skipif(not POSIX, reason="process groups are POSIX; Windows uses taskkill /T")
def test_orphan_holding_the_pipe_is_killed_after_normal_exit(tmp_path):
    pid_file = tmp_path / "orphan.pid"
    process = sb.SegmentationProcess(script(f"""
        import subprocess, sys
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
    """))
    process.start()
    finished = process.wait(interval=0.05)
    assert finished.status == "succeeded"
    orphan = int(wait_for_file(pid_file))
    deadline = time.monotonic() + 5
    while pid_running(orphan) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_running(orphan)


def test_timeout_stops_the_child():
    process = sb.SegmentationProcess(script("""
        import time
        print("PROGRESS 0.1 read", flush=True)
        time.sleep(60)
    """), timeout=0.5, kill_grace=0.5)
    process.start()
    finished = process.wait(interval=0.05)
    assert finished.status == "timed out" and "0.5 s" in finished.error
    assert [line.update for line in process.log] == [sb.Progress(0.1, "read")]


@pytest.mark.skipif(not POSIX, reason="SIGTERM escalation is POSIX")
def test_child_ignoring_sigterm_is_killed_after_grace():
    process = sb.SegmentationProcess(script("""
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        time.sleep(60)
    """), kill_grace=0.3)
    process.start()
    while not process.log:
        process.poll()
        time.sleep(0.02)
    process.cancel()
    finished = process.wait(interval=0.05)
    assert finished.status == "cancelled" and finished.returncode == -9


# --------------------------------------------------------------------------- torch


def test_module_import_does_not_import_torch():
    result = subprocess.run(
        [sys.executable, "-c", "import sys, LumbarSegLib.slicer_bridge; print('torch' in sys.modules)"],
        cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("requirement, name", [
    ("torch>=2.0", "torch"), ("scipy", "scipy"), ("slicerio==1.4", "slicerio"),
    ("Some-Package[extra]~=1.0", "some_package"), ("numpy; python_version>'3.8'", "numpy"),
])
def test_requirement_name(requirement, name):
    assert sb.requirement_name(requirement) == name


def test_missing_requirements():
    assert sb.missing_requirements(["json", "os>=1"]) == []
    assert sb.missing_requirements(["json", "no_such_package_lumbarseg>=1"]) == ["no_such_package_lumbarseg>=1"]


def test_parse_torch_probe():
    assert sb.parse_torch_probe('noise\n{"version": "2.3.0", "cuda": true}\n') == sb.TorchStatus(True, "2.3.0", True)
    assert sb.parse_torch_probe("Traceback ...\nModuleNotFoundError") == sb.TorchStatus(False, None, False)


def test_torch_status_here_and_in_child_agree():
    pytest.importorskip("torch")
    import torch

    here = sb.torch_status()
    assert here == sb.TorchStatus(True, torch.__version__, torch.cuda.is_available())
    assert sb.torch_status(sys.executable) == here
    assert sb.cuda_available() == torch.cuda.is_available()


def test_torch_status_of_python_without_torch(tmp_path):
    # An interpreter whose import of torch fails reports "not installed".
    fake = tmp_path / "torch"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('broken torch')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(sb.torch_probe_command(sys.executable), env=env, capture_output=True, text=True)
    assert result.returncode != 0
    assert sb.parse_torch_probe(result.stdout) == sb.TorchStatus(False, None, False)
    assert sb.torch_status("/nonexistent/python") == sb.TorchStatus(False, None, False)


# --------------------------------------------------------------------------- the real pipeline


def test_real_pipeline_contract_through_the_bridge(tmp_path):
    """Run ``python -m LumbarSegLib segment`` as the Slicer module does, on a small phantom.

    Without bundled weights the pipeline must fail with its one-line error surfaced (exit 7);
    with weights it must either succeed and write the files the module loads, or fail with
    a surfaced ``lumbarseg: error:`` line.
    """
    import SimpleITK as sitk
    import slicerio

    from LumbarSegLib.phantom import make_phantom

    ct, _labels, _anatomy = make_phantom(seed=1, kind="lumbar", spacing=(3.0, 3.0, 3.0))
    input_path = tmp_path / "volume.nrrd"
    sitk.WriteImage(ct, str(input_path))
    output_dir = tmp_path / "out"
    command = sb.build_segment_command(sys.executable, input_path, output_dir, device="cpu")
    env = sb.child_environment({k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, REPO)
    process = sb.SegmentationProcess(command, env=env, cwd=tmp_path, timeout=900)
    process.start()
    finished = process.wait(interval=0.1)
    progress = [line.update for line in process.log if isinstance(line.update, sb.Progress)]
    assert progress and progress[0].stage == "read"
    errors = [line.update.message for line in process.log
              if isinstance(line.update, sb.Diagnostic) and line.update.level == "error"]
    has_weights = any(p.suffix == ".pt" for p in (REPO / "Resources" / "Models").glob("*"))
    if not has_weights:
        assert finished.status == "failed" and finished.returncode == 7
    if finished.status == "failed":
        assert errors and finished.error == errors[-1]
        return
    assert finished.status == "succeeded" and progress[-1] == sb.Progress(1.0, "done")
    outputs = sb.expected_outputs(output_dir, "volume")
    assert outputs["segmentation"].is_file() and outputs["labelmap"].is_file()
    assert isinstance(sb.read_report(outputs["report"]), dict)
    names = [segment["name"] for segment in slicerio.read_segmentation(str(outputs["segmentation"]),
                                                                        skip_voxels=True)["segments"]]
    assert set(names) <= set(TERMINOLOGY_LEVELS)
