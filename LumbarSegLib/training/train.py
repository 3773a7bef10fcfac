"""Training loop for the localizer and the XUNet: resumable, deterministic, logged.

``lumbarseg train xunet --config LumbarSegLib/training/configs/xunet.json --out runs/xunet``
writes ``checkpoint.pt`` (resume state), ``best.pt`` and ``last.pt`` (model
files, see ``LumbarSegLib.models``) and ``log.jsonl`` (loss, learning rate and
validation Dice) into the output folder. Running the same command again
resumes from the checkpoint; sample ``i`` is always generated from
``(seed, i)``, so a resumed run sees the same data as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from LumbarSegLib import __version__
from LumbarSegLib.inference import device_layout, precision_context, select_device
from LumbarSegLib.labels import NETWORK_CLASSES
from LumbarSegLib.errors import ModelError
from LumbarSegLib.models import ModelSpec, build_network, load_model, save_model
from LumbarSegLib.training.data import Sample, SampleFactory, load_real_cases
from LumbarSegLib.training.losses import deep_supervision_loss, masked_bce_dice

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "realct"
CONFIG_DIR = Path(__file__).parent / "configs"


class IndexedSamples(Dataset):
    """Samples ``start .. start + count - 1`` of a factory, as tensors."""

    def __init__(self, factory: SampleFactory, start: int, count: int) -> None:
        self.factory, self.start, self.count = factory, start, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        sample = self.factory(self.start + i)
        return to_tensors(sample)


def to_tensors(sample: Sample) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (
        torch.from_numpy(np.ascontiguousarray(sample.image))[None],
        torch.from_numpy(sample.target.astype(np.int64)),
        torch.from_numpy(np.ascontiguousarray(sample.valid)),
    )


def _init_worker(_: int) -> None:
    """Data workers use one thread and leave Ctrl-C/SIGTERM to the main process, which saves a checkpoint."""
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def model_spec(config: dict, *, training: dict | None = None) -> ModelSpec:
    kind = config["kind"]
    return ModelSpec(
        kind=kind,
        channels=tuple(config["channels"]),
        spacing_mm=float(config["spacing_mm"]),
        patch=tuple(config["patch"]),
        num_classes=1 if kind == "localizer" else len(NETWORK_CLASSES),
        version=f"{kind}-{__version__}",
        training=training or {},
    )


def read_config(path: Path) -> dict:
    """A training config; ``"extends": "other.json"`` (beside it) supplies every key it does not set."""
    config = json.loads(path.read_text())
    base = config.pop("extends", None)
    return {**read_config(path.parent / base), **config} if base else config


def learning_rate(step: int, config: dict, *, optimizer_start: int = 0) -> float:
    """Cosine decay to 2 % of the peak at ``steps``, with a linear warm-up whenever an optimizer starts.

    The cosine runs from step ``cosine_from`` (default 0; a fine-tuning config sets its first step).
    """
    peak, warmup, total = config["learning_rate"], config["warmup_steps"], config["steps"]
    start = config.get("cosine_from", 0)
    progress = min(1.0, max(0, step - start) / max(1, total - start))
    cosine = peak * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress)))
    return cosine * min(1.0, (step - optimizer_start + 1) / warmup)


def compute_loss(kind: str, outputs, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    if kind == "localizer":
        return masked_bce_dice(outputs, target, valid)
    return deep_supervision_loss(outputs, target, valid)


def training_step(net: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                  image: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, *, kind: str,
                  precision: contextlib.AbstractContextManager) -> torch.Tensor:
    """One optimizer step on a batch already on the device (and in its layout); returns the loss."""
    with precision:
        outputs = net(image)
    loss = compute_loss(kind, [o.float() for o in outputs] if isinstance(outputs, list) else outputs.float(),
                        target, valid)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss


def selection_score(dice: dict[str, float]) -> float:
    """The score that picks ``best.pt``: mean validation Dice over L1-L5 (the localizer: its one class).

    L6 (in one or two of the validation phantoms) and the anchor classes are left
    out: the L6 Dice swings between 0 and 0.3 from one validation to the next and
    would choose the checkpoint by it.
    """
    levels = [dice[name] for name in ("L1", "L2", "L3", "L4", "L5") if name in dice] or list(dice.values())
    return float(np.mean(levels)) if levels else 0.0


def validation_dice(net: torch.nn.Module, kind: str, batches: list, device: torch.device) -> dict[str, float]:
    """Mean Dice per foreground class over the validation samples (valid voxels only)."""
    net.eval()
    classes = ["lumbar"] if kind == "localizer" else list(NETWORK_CLASSES[1:])
    scores: dict[str, list[float]] = {name: [] for name in classes}
    with torch.inference_mode(), precision_context(device):
        for image, target, valid in batches:
            logits = net(device_layout(image, device)).float().cpu()
            pred = (logits[:, 0] > 0).long() if kind == "localizer" else logits.argmax(1)
            for cls, name in enumerate(classes, start=1):
                truth = (target == cls) & valid
                if truth.sum() == 0:
                    continue
                guess = (pred == cls) & valid
                scores[name].append(float(2 * (truth & guess).sum() / (truth.sum() + guess.sum())))
    net.train()
    return {name: float(np.mean(values)) for name, values in scores.items() if values}


def train(*, config_path: Path, out_dir: Path, data_dir: Path | None = None, device_name: str = "auto",
          threads: int | None = None, steps: int | None = None, export: Path | None = None,
          init_from: Path | None = None) -> Path:
    """Train (or resume training) one network; returns the path of the best model file.

    Resumes from ``out_dir/checkpoint.pt`` when it exists. Otherwise
    ``init_from`` (a model file, e.g. the bundled weights) continues a run in a
    new folder: weights and step count come from the file, the optimizer starts
    afresh with a new warm-up.
    """
    config = read_config(Path(config_path))
    if steps is not None:
        config["steps"] = steps
    kind = config["kind"]
    out_dir.mkdir(parents=True, exist_ok=True)
    if threads:
        torch.set_num_threads(threads)
    torch.set_flush_denormal(True)  # denormal gradients late in training slow CPU kernels many-fold
    device = select_device(device_name)
    data_dir = data_dir or DEFAULT_DATA_DIR
    real_names = [name for name in config["real_cases"] if (data_dir / "rawdata" / name).is_dir()]
    real_cases = load_real_cases(data_dir, real_names, config["spacing_mm"])
    factory = SampleFactory(kind=kind, config=config, real_cases=real_cases)
    validation_factory = SampleFactory(
        kind=kind, config={**config, "seed": 10_000 + config["seed"], "sources": {"phantom": 1.0}}, real_cases=[]
    )
    validation = [
        tuple(t[None] for t in to_tensors(validation_factory(i))) for i in range(config["validation_phantoms"])
    ]

    net = device_layout(build_network(model_spec(config)), device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config["learning_rate"], weight_decay=config["weight_decay"])
    checkpoint_path = out_dir / "checkpoint.pt"
    step, best, elapsed, optimizer_start = 0, -1.0, 0.0, 0
    if checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location=device, weights_only=False)
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, best, elapsed = state["step"], state["best"], state.get("seconds", 0.0)
        optimizer_start = state.get("optimizer_start", 0)
        print(f"resuming {kind} at step {step}", flush=True)
    elif init_from is not None:
        initial, initial_spec = load_model(init_from)
        if initial_spec.kind != kind or tuple(initial_spec.channels) != tuple(config["channels"]):
            raise ModelError(f"{init_from} is not a {kind} with channels {config['channels']}")
        net.load_state_dict(initial.state_dict())
        step = int(initial_spec.training.get("steps", 0))
        elapsed = float(initial_spec.training.get("seconds", 0.0))
        print(f"continuing {kind} from {init_from} at step {step}", flush=True)
        optimizer_start = step
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    batch = int(config["batch_size"])
    loader = DataLoader(
        IndexedSamples(factory, step * batch, max(0, config["steps"] - step) * batch),
        batch_size=batch, num_workers=1, worker_init_fn=_init_worker, persistent_workers=False,
    )

    def save_checkpoint() -> None:
        torch.save({"model": net.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "best": best,
                    "seconds": elapsed, "optimizer_start": optimizer_start, "config": config}, out_dir / "checkpoint.tmp")
        (out_dir / "checkpoint.tmp").replace(checkpoint_path)

    def training_facts() -> dict:
        return {"steps": step, "batch_size": batch, "seconds": round(elapsed), "sources": config["sources"],
                "real_cases": real_names, "held_out_cases": config.get("held_out_cases", []),
                "best_validation_dice": round(best, 4), "device": device.type}

    log = (out_dir / "log.jsonl").open("a")
    net.train()
    tick = time.time()
    try:
        for image, target, valid in loader:
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, config, optimizer_start=optimizer_start)
            loss = training_step(net, optimizer, scaler, device_layout(image, device), target.to(device),
                                 valid.to(device), kind=kind, precision=precision_context(device))
            step += 1
            now = time.time()
            elapsed += now - tick
            tick = now
            record = {"step": step, "loss": round(loss.item(), 5), "lr": optimizer.param_groups[0]["lr"],
                      "seconds": round(elapsed, 1)}
            if step % config["validate_every"] == 0 or step == config["steps"]:
                dice = validation_dice(net, kind, validation, device)
                record["validation_dice"] = dice
                score = selection_score(dice)
                if score > best:
                    best = score
                    save_model(net, model_spec(config, training=training_facts()), out_dir / "best.pt")
                save_model(net, model_spec(config, training=training_facts()), out_dir / "last.pt")
            log.write(json.dumps(record) + "\n")
            log.flush()
            print(json.dumps(record), flush=True)
            if step % config["checkpoint_every"] == 0:
                save_checkpoint()
    finally:
        save_checkpoint()
        log.close()
    best_path = out_dir / "best.pt"
    if export is not None and best_path.exists():
        export.parent.mkdir(parents=True, exist_ok=True)
        export.write_bytes(best_path.read_bytes())
    return best_path
