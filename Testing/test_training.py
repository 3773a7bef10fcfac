"""Training: deterministic samples, partial labels, a real (tiny) resumable run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from LumbarSegLib.models import load_model
from LumbarSegLib.training.data import SampleFactory, labelled_range
from LumbarSegLib.training.train import CONFIG_DIR, learning_rate, read_config, selection_score, train

TINY = {
    "kind": "xunet", "spacing_mm": 6.0, "patch": [16, 16, 16], "channels": [4, 8], "batch_size": 1,
    "steps": 3, "learning_rate": 0.002, "weight_decay": 0.0, "warmup_steps": 2, "seed": 3,
    "sources": {"phantom": 1.0}, "transitional_share": 0.2, "real_cases": [], "validation_phantoms": 1,
    "validate_every": 2, "checkpoint_every": 1,
}


def test_samples_are_deterministic_per_index():
    factory = SampleFactory(kind="xunet", config=TINY, real_cases=[])
    a, b, c = factory(5), factory(5), factory(6)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.target, b.target)
    assert not np.array_equal(a.image, c.image)
    assert a.image.shape == tuple(TINY["patch"]) and a.image.dtype == np.float32
    assert a.target.max() <= 8


def test_labelled_range_marks_unannotated_levels_unknown():
    verse = np.zeros((30, 4, 4), dtype=np.uint8)
    verse[10:20, 1:3, 1:3] = 22
    valid = labelled_range(verse)
    assert valid[10:20].all() and not valid[:10].any() and not valid[20:].any()


def test_learning_rate_warms_up_from_each_optimizer_start():
    config = {"learning_rate": 1.0, "warmup_steps": 10, "steps": 100}
    assert learning_rate(0, config) == pytest.approx(0.1)
    assert learning_rate(50, config, optimizer_start=50) < learning_rate(59, config, optimizer_start=50)
    assert learning_rate(99, config) < 0.05


def test_fine_tuning_cosine_starts_at_its_first_step():
    config = {"learning_rate": 1.0, "warmup_steps": 1, "steps": 150, "cosine_from": 100}
    assert learning_rate(100, config, optimizer_start=100) == pytest.approx(1.0)
    assert learning_rate(125, config, optimizer_start=100) == pytest.approx(0.02 + 0.98 * 0.5)
    assert learning_rate(150, config, optimizer_start=100) == pytest.approx(0.02)


def test_fine_tuning_config_extends_the_bundled_one():
    base = json.loads((CONFIG_DIR / "xunet.json").read_text())
    fine_tuning = read_config(CONFIG_DIR / "xunet_finetune.json")
    assert "extends" not in fine_tuning and fine_tuning["cosine_from"] == 10500
    assert {key: value for key, value in fine_tuning.items() if key in base and value != base[key]}.keys() == {
        "steps", "learning_rate"}


def test_best_checkpoint_is_chosen_by_the_five_lumbar_levels():
    steady = {"L1": 0.9, "L2": 0.9, "L3": 0.9, "L4": 0.9, "L5": 0.9, "L6": 0.0, "thoracic": 0.5, "sacrum": 0.5}
    lucky_l6 = {**steady, "L1": 0.8, "L6": 0.4}  # an L6 hit must not outweigh a worse L1
    assert selection_score(steady) == pytest.approx(0.9)
    assert selection_score(lucky_l6) < selection_score(steady)
    assert selection_score({"lumbar": 0.6}) == pytest.approx(0.6)  # the localizer's one class


def test_tiny_training_run_resumes_and_continues(tmp_path):
    config_path = tmp_path / "tiny.json"
    config_path.write_text(json.dumps(TINY))
    run = tmp_path / "run"
    best = train(config_path=config_path, out_dir=run, data_dir=tmp_path, threads=1, steps=2)
    assert best.exists() and (run / "checkpoint.pt").exists()
    train(config_path=config_path, out_dir=run, data_dir=tmp_path, threads=1)
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    _, spec = load_model(run / "last.pt")
    assert spec.training["steps"] == 3 and spec.kind == "xunet"
    continued = tmp_path / "continued"
    train(config_path=config_path, out_dir=continued, data_dir=tmp_path, threads=1, steps=4,
          init_from=run / "last.pt")
    assert [json.loads(line)["step"] for line in (continued / "log.jsonl").read_text().splitlines()] == [4]
