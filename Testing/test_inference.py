"""Sliding-window inference, device and precision selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from LumbarSegLib.errors import InputError
from LumbarSegLib.inference import (
    autocast_dtype, cpu_has_fast_bf16, device_layout, gaussian_weights, padded_shape, select_device, sliding_window, window_starts,
)


class Pointwise(nn.Module):
    """A per-voxel network with known output: logits (x, -x, 2x)."""

    size_multiple = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, -x, 2 * x], dim=1)


class Mean(nn.Module):
    """Output depends on the whole window: reveals which window each voxel came from."""

    size_multiple = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3, 4), keepdim=True).expand_as(x).contiguous()


@pytest.mark.parametrize("shape", [(20, 17, 9), (40, 33, 50), (8, 8, 8)])
@pytest.mark.parametrize("batch", [1, 2, 3])
def test_pointwise_network_gives_identical_result_through_windows(shape, batch):
    volume = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    probs = sliding_window(Pointwise(), volume, patch=(16, 16, 16), device=torch.device("cpu"), pad_value=-1.0,
                           batch=batch)
    expected = torch.softmax(torch.from_numpy(np.stack([volume, -volume, 2 * volume])), dim=0).numpy()
    assert probs.shape == (3,) + shape
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)


def test_windows_cover_every_voxel_and_report_progress():
    calls = []
    volume = np.ones((50, 20, 20), dtype=np.float32)
    out = sliding_window(Mean(), volume, patch=(16, 16, 16), device=torch.device("cpu"), pad_value=0.0,
                         activation="sigmoid", on_window=lambda done, total: calls.append((done, total)))
    assert np.isfinite(out).all()
    totals = {total for _, total in calls}
    assert len(totals) == 1 and calls[-1][0] == calls[-1][1] > 2
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_window_starts_cover_and_overlap():
    starts = window_starts(100, 32, 0.5)
    assert starts[0] == 0 and starts[-1] == 100 - 32
    assert all(b - a <= 16 for a, b in zip(starts, starts[1:]))
    assert window_starts(20, 32, 0.5) == [0]


def test_padded_shape_reaches_patch_and_multiple():
    assert padded_shape((10, 70, 33), (32, 64, 64), 8) == (32, 72, 64)


def test_gaussian_weights_peak_at_centre():
    weights = gaussian_weights((9, 9, 9))
    assert weights[4, 4, 4] == weights.max() == 1.0
    assert weights.min() > 0


def test_device_selection():
    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InputError):
        select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA"):
            select_device("cuda")


def test_precision_follows_cpu_capability():
    expected = torch.bfloat16 if cpu_has_fast_bf16() else None
    assert autocast_dtype(torch.device("cpu")) == expected
    assert autocast_dtype(torch.device("cuda")) == torch.float16


@pytest.mark.parametrize("amx, avx512_bf16, fast", [(True, False, True), (False, True, True), (False, False, False)])
def test_bf16_needs_amx_or_avx512_bf16(monkeypatch, amx, avx512_bf16, fast):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    assert cpu_has_fast_bf16() is fast
    assert autocast_dtype(torch.device("cpu")) == (torch.bfloat16 if fast else None)


@pytest.mark.parametrize("fast", [True, False])
def test_device_layout_is_channels_last_only_with_reduced_precision(monkeypatch, fast):
    monkeypatch.setattr("LumbarSegLib.inference.cpu_has_fast_bf16", lambda: fast)
    cpu = torch.device("cpu")
    x = device_layout(torch.zeros(1, 2, 3, 4, 5), cpu)
    conv = device_layout(nn.Conv3d(2, 2, 3), cpu)
    assert x.is_contiguous(memory_format=torch.channels_last_3d) is fast
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d) is fast
    assert x.is_contiguous() is not fast
