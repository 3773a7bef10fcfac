"""The benchmark harness's helpers (medians, speed-up, targets, Markdown, clinical grids, nested timers) and
the claims of its prototypes.

No timing assertions: the benchmark itself (``bench/run_benchmark.py``) measures.
"""

from __future__ import annotations

import gzip
import types

import numpy as np
import pytest

from bench import child, prototypes, report
from bench.inputs import PHANTOMS, PhantomInput, clinical_grid, input_path
from LumbarSegLib.phantom import sample_anatomy


def run(end_to_end: float, rss: float, nested: dict[str, float]) -> dict:
    return {"end_to_end_s": end_to_end, "process_wall_s": end_to_end + 3, "peak_rss_mb": rss,
            "stages_s": {"read": end_to_end / 10, "segment": end_to_end / 2}, "nested_s": nested,
            "startup_s": {"imports": 2.0, "models": 0.5},
            "windows": {"segment": {"grid_zyx": [96, 72, 64], "windows": 2}}}


def baseline_run(end_to_end: float, network: float) -> dict:
    return {"end_to_end_s": end_to_end, "process_wall_s": end_to_end + 3, "peak_rss_mb": 2000.0,
            "stages_s": {"read": 1.0, "network": network}, "grid": [168, 168, 248], "windows": 125}


def test_median_ignores_missing_values_and_is_none_without_any():
    assert report.median([3.0, None, 1.0, 2.0]) == 2.0
    assert report.median([4.0, 1.0]) == 2.5
    assert report.median([None]) is None


def test_median_by_key_takes_each_key_over_the_runs_that_have_it():
    runs = [{"read": 1.0, "write": 5.0}, {"read": 3.0}, {"read": 2.0, "write": 7.0, "extra": 1.0}]
    assert report.median_by_key(runs) == {"read": 2.0, "write": 6.0, "extra": 1.0}
    assert list(report.median_by_key(runs)) == ["read", "write", "extra"]


def test_speedup_is_baseline_over_ours_and_none_when_unknown():
    assert report.speedup(50.0, 10.0) == 5.0
    assert report.speedup(None, 10.0) is None
    assert report.speedup(50.0, 0.0) is None


def test_summarise_reports_medians_worst_memory_network_share_and_speedup():
    nested = {"read": 1.0, "localize/network": 2.0, "segment/network": 4.0, "segment/resample": 0.5}
    runs = [run(10.0, 900.0, nested), run(12.0, 1100.0, nested), run(11.0, 1000.0, nested)]
    summary = report.summarise(runs, [baseline_run(66.0, 60.0)])
    assert summary["end_to_end_s"] == 11.0
    assert summary["peak_rss_mb"] == 1100.0
    assert summary["network_s"] == 6.0
    assert summary["data_s"] == 1.5
    assert summary["speedup"] == 6.0
    assert summary["speedup_network"] == 10.0
    assert "speedup" not in report.summarise(runs, [])


def test_dice_by_label_counts_every_label_of_either_map():
    a = np.array([0, 20, 20, 21, 0, 0])
    b = np.array([0, 20, 0, 0, 22, 0])
    assert report.dice_by_label(a, b) == {
        20: {"dice": round(2 / 3, 4), "voxels": [2, 1]},
        21: {"dice": 0.0, "voxels": [1, 0]},
        22: {"dice": 0.0, "voxels": [0, 1]},
    }


def test_targets_are_checked_only_for_measured_inputs():
    checks = report.check_targets({"large": {"end_to_end_s": 31.0, "peak_rss_mb": 2000.0, "speedup": 7.0}})
    met = {(c["input"], c["metric"]): c["met"] for c in checks}
    assert met == {("large", "end_to_end_s"): False, ("large", "peak_rss_mb"): True, ("large", "speedup"): True}


def test_proposed_changes_are_a_variant_of_their_input_with_the_same_targets():
    inputs = {"medium": {"summary": {"end_to_end_s": 20.0}, "summary_prototypes": {"end_to_end_s": 9.0}}}
    summaries = report.labelled_summaries(inputs)
    assert list(summaries) == ["medium", "medium + proposed changes"]
    assert [(c["input"], c["met"]) for c in report.check_targets(summaries)] == [
        ("medium", False), ("medium + proposed changes", True)]


def test_markdown_has_every_input_target_and_stage():
    nested = {"read": 1.0, "segment/network": 4.0}
    inputs = {name: {"size": [512, 512, 300], "spacing": [0.7, 0.7, 2.0],
                     "summary": report.summarise([run(8.0, 900.0, nested)], [baseline_run(80.0, 60.0)])}
              for name in ("medium", "real")}
    results = {
        "meta": {"date": "d", "cpu": "c", "threads": 2, "torch": "t", "simpleitk": "s", "lumbarseg": "v",
                 "commit": "abc", "models": "m", "repeats": 1, "baseline_repeats": 1, "loadavg": "0", "note": ""},
        "inputs": inputs,
        "targets": report.check_targets(report.labelled_summaries(inputs)),
        "precision": [{"label": "w", "window": [32, 32, 32], "fp32_s": 0.01, "bf16_s": 1.0, "bf16_over_fp32": 100.0,
                       "max_abs_logit_diff": 0.1, "argmax_agreement": 0.99, "cpu_has_fast_bf16": False}],
    }
    text = report.markdown(results)
    assert "| medium | 512×512×300 | 0.7×0.7×2 | 8.00 |" in text
    assert "| real |" in text
    assert "| medium | end_to_end_s | ≤ 15.0 | 8.00 | yes |" in text
    assert "| medium | speedup | ≥ 5.0 | 10.00 | yes |" in text
    assert "| segment | 4.00 | 4.00 |" in text
    assert "100.0× fp32" in text


@pytest.mark.parametrize("name", sorted(PHANTOMS))
def test_clinical_grid_has_the_exact_matrix_and_spacing_and_is_centred_on_the_abdomen(name):
    spec = PHANTOMS[name]
    anatomy = sample_anatomy(spec.seed, variant="normal")
    grid = clinical_grid(anatomy, spec.size, spec.spacing)
    assert grid.size == spec.size
    assert grid.spacing == spec.spacing
    lo, hi = anatomy.fov_box("abdomen")
    np.testing.assert_allclose(grid.corners().mean(axis=0), (np.asarray(lo) + np.asarray(hi)) / 2, atol=1e-6)


def test_phantom_keys_differ_by_grid_and_seed():
    keys = {PhantomInput((8, 8, 8), (1.0, 1.0, 1.0)).key, PhantomInput((8, 8, 9), (1.0, 1.0, 1.0)).key,
            PhantomInput((8, 8, 8), (1.0, 1.0, 2.0)).key, PhantomInput((8, 8, 8), (1.0, 1.0, 1.0), seed=1).key}
    assert len(keys) == 4


def test_missing_real_ct_is_skipped_and_unknown_inputs_refused(tmp_path):
    assert input_path("real", tmp_path, real_ct=tmp_path / "absent.nii.gz") is None
    with pytest.raises(ValueError):
        input_path("huge", tmp_path)


def test_nested_times_key_parts_by_call_path_and_keep_results():
    calls = types.SimpleNamespace(inner=lambda value: value * 2)
    calls.outer = lambda value: calls.inner(value) + 1
    times = child.NestedTimes()
    times.wrap(calls, "inner", "inner")
    times.wrap(calls, "outer", "outer")
    assert calls.outer(3) == 7
    assert calls.inner(1) == 2
    assert set(times.seconds) == {"outer", "outer/inner", "inner"}
    assert times.seconds["outer"] >= times.seconds["outer/inner"] >= 0.0


def test_the_read_prototype_takes_the_uncompressed_length_from_the_gzip_trailer(tmp_path):
    data = np.arange(100_000, dtype=np.int16).tobytes()
    path = tmp_path / "scan.nii.gz"
    path.write_bytes(gzip.compress(data))
    assert prototypes.gzip_trailer_size(path) == len(data)
