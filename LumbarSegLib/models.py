"""Model files: a network's weights plus the spec the pipeline needs to run it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import pickle

import torch
from torch import nn

from LumbarSegLib.errors import ModelError
from LumbarSegLib.networks import LocalizerUNet, XUNet
from LumbarSegLib.resources import model_path

LOCALIZER_FILE = "localizer.pt"
XUNET_FILE = "xunet.pt"


@dataclass(frozen=True)
class ModelSpec:
    """How a network was built and trained, stored with its weights.

    Attributes:
        kind: ``localizer`` or ``xunet``.
        channels: feature channels per level.
        spacing_mm: isotropic spacing of the grid the network runs on.
        patch: training/inference window (z, y, x) in voxels.
        num_classes: output channels.
        version: model version string written into reports.
        training: free-form facts about the training run (iterations, time, data).
    """

    kind: str
    channels: tuple[int, ...]
    spacing_mm: float
    patch: tuple[int, int, int]
    num_classes: int
    version: str = "untrained"
    training: dict = field(default_factory=dict)


def build_network(spec: ModelSpec) -> nn.Module:
    """Instantiate the (untrained) network a spec describes."""
    if spec.kind == "localizer":
        return LocalizerUNet(channels=tuple(spec.channels))
    if spec.kind == "xunet":
        return XUNet(num_classes=spec.num_classes, channels=tuple(spec.channels))
    raise ModelError(f"unknown model kind '{spec.kind}'")


def save_model(net: nn.Module, spec: ModelSpec, path: Path) -> None:
    """Write weights as float16 (half the size; accuracy checked in evaluation) with the spec."""
    state = {name: tensor.detach().to(torch.float16) for name, tensor in net.state_dict().items()}
    torch.save({"spec": asdict(spec), "state_dict": state}, path)


def load_model(path: Path) -> tuple[nn.Module, ModelSpec]:
    """Load a model file into a float32 network in eval mode."""
    if not Path(path).is_file():
        raise ModelError(f"model file not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        spec_fields = payload["spec"]
        spec = ModelSpec(
            **{**spec_fields, "channels": tuple(spec_fields["channels"]), "patch": tuple(spec_fields["patch"])}
        )
        net = build_network(spec)
        net.load_state_dict({name: tensor.float() for name, tensor in payload["state_dict"].items()})
    except (KeyError, TypeError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as error:
        raise ModelError(f"model file {path} is damaged or does not match the network: {error}") from None
    return net.eval(), spec


def load_network(name: str, path: Path | None = None) -> tuple[nn.Module, ModelSpec]:
    """Load the model file ``path``, or the model ``name`` shipped in ``Resources/Models`` when it is None."""
    if path is not None:
        return load_model(path)
    try:
        path = model_path(name)
    except FileNotFoundError as error:
        raise ModelError(str(error)) from None
    return load_model(path)
