"""Networks, model files and training losses."""

from __future__ import annotations

import torch

from LumbarSegLib.errors import ModelError
from LumbarSegLib.models import ModelSpec, build_network, load_model, save_model
from LumbarSegLib.networks import LocalizerUNet, XUNet
from LumbarSegLib.training.losses import deep_supervision_loss, masked_bce_dice, masked_dice_ce

import pytest


def test_xunet_shapes_in_training_and_inference():
    net = XUNet(num_classes=9, channels=(4, 8, 16))
    x = torch.randn(2, 1, 16, 24, 32)
    net.train()
    outputs = net(x)
    assert [tuple(o.shape) for o in outputs] == [(2, 9, 16, 24, 32), (2, 9, 8, 12, 16)]
    net.eval()
    with torch.inference_mode():
        assert net(x).shape == (2, 9, 16, 24, 32)


def test_localizer_shape():
    net = LocalizerUNet(channels=(4, 8, 16)).eval()
    with torch.inference_mode():
        assert net(torch.randn(1, 1, 8, 16, 24)).shape == (1, 1, 8, 16, 24)


def test_model_file_round_trip(tmp_path):
    spec = ModelSpec(kind="xunet", channels=(4, 8, 16), spacing_mm=2.5, patch=(16, 16, 16), num_classes=9,
                     version="test-1", training={"steps": 3})
    net = build_network(spec).eval()
    save_model(net, spec, tmp_path / "m.pt")
    loaded, loaded_spec = load_model(tmp_path / "m.pt")
    assert loaded_spec == spec
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), net(x), atol=2e-2, rtol=2e-2)


def test_damaged_model_file_is_a_model_error(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a model")
    with pytest.raises(ModelError):
        load_model(tmp_path / "bad.pt")
    with pytest.raises(ModelError):
        load_model(tmp_path / "missing.pt")


def test_losses_ignore_invalid_voxels_and_reward_correct_predictions():
    target = torch.randint(0, 3, (1, 8, 8, 8))
    valid = torch.ones_like(target, dtype=torch.bool)
    valid[:, :4] = False
    good = torch.nn.functional.one_hot(target, 3).permute(0, 4, 1, 2, 3).float() * 10
    bad = torch.roll(good, 1, dims=1)
    assert masked_dice_ce(good, target, valid) < 0.1 < masked_dice_ce(bad, target, valid)
    changed = target.clone()
    changed[:, :4] = (changed[:, :4] + 1) % 3
    torch.testing.assert_close(masked_dice_ce(good, target, valid), masked_dice_ce(good, changed, valid))
    binary = (target > 0).long()
    logits = (binary.float() * 2 - 1)[:, None] * 10
    assert masked_bce_dice(logits, binary, valid) < 0.05
    assert deep_supervision_loss([good, good[:, :, ::2, ::2, ::2]], target, valid) < 0.1
