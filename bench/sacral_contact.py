"""Calibrate the sacralization check: L5-sacrum contact on normal and sacralized phantoms.

``postprocess.sacralization`` flags an L5 whose voxels touch the sacrum over more
than ``SACRALIZATION_CONTACT_SHARE`` of its volume. This runs the pipeline's
localizer, XUNet and cleaning on phantoms drawn from seeds that neither the
training nor ``lumbarseg evaluate --phantoms`` use (700000 + i; alternately
normal and sacralized, abdomen and tight lumbar fields of view) and prints the
contact share of each, so the threshold is set on cases it is then not
validated on.

    python -m bench.sacral_contact --cases 24 [--xunet runs/xunet/best.pt]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from LumbarSegLib.localize import lumbar_probability, spine_box
from LumbarSegLib.phantom.acquisition import random_grid
from LumbarSegLib.phantom.render import render
from LumbarSegLib.phantom.sampling import sample_anatomy
from LumbarSegLib.pipeline import Models, set_threads
from LumbarSegLib.postprocess import SACRALIZATION_CONTACT_SHARE, clean, sacrum_contact_share
from LumbarSegLib.segment import segment_spine

CALIBRATION_SEED = 700_000
RESULTS = Path(__file__).parent / "results" / "sacral_contact.json"


def contact_share(models: Models, seed: int, *, variant: str, fov: str) -> tuple[float, list[str]]:
    """L5-sacrum contact share and findings of one phantom, after the pipeline's cleaning."""
    anatomy = sample_anatomy(seed, variant=variant)
    grid = random_grid(anatomy, np.random.default_rng([seed, 1]), spacing_range=(0.8, 3.0), max_voxels=1 << 23,
                       kind=fov)
    ct, _ = render(anatomy, grid, realism=True, seed=seed)
    probability, coarse = lumbar_probability(ct, models.localizer, models.localizer_spec, device=models.device)
    spec = models.xunet_spec
    probabilities, crop, hu = segment_spine(ct, spine_box(probability, coarse), models.xunet, spec,
                                            device=models.device)
    result = clean(probabilities, hu=hu, spacing_mm=spec.spacing_mm, origin_z_mm=crop.GetOrigin()[2])
    return sacrum_contact_share(result.labels), [f.code for f in result.findings]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sacral_contact", description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--xunet", type=Path, help="XUNet model file (default: the bundled one)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    models = Models.load(torch.device("cpu"), xunet=args.xunet)
    rows = []
    for i in range(args.cases):
        variant, fov = ("normal", "sacralized_L5")[i % 2], ("abdomen", "lumbar")[i // 2 % 2]
        share, findings = contact_share(models, CALIBRATION_SEED + i, variant=variant, fov=fov)
        rows.append({"seed": CALIBRATION_SEED + i, "variant": variant, "fov": fov, "share": round(share, 4),
                     "findings": findings})
        print(json.dumps(rows[-1]), flush=True)
    for variant in ("normal", "sacralized_L5"):
        shares = [r["share"] for r in rows if r["variant"] == variant]
        flagged = sum(s >= SACRALIZATION_CONTACT_SHARE for s in shares)
        print(f"{variant}: share {min(shares):.3f}-{max(shares):.3f}, flagged {flagged} of {len(shares)} "
              f"at {SACRALIZATION_CONTACT_SHARE}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
