"""Held-out phantom cases written in the VerSe layout, for ``lumbarseg evaluate --phantoms N``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .acquisition import random_grid
from .render import render
from .sampling import sample_anatomy

# Seeds far from those the training draws (uniform in [0, 2**31)): collisions are negligible,
# and every fourth case is transitional so the flags are exercised.
HELD_OUT_SEED = 900_000
VARIANT_CYCLE = ("normal", "L6", "normal", "sacralized_L5", "normal", "T13", "normal", "11_ribs")
EVALUATION_SPACING_MM = (0.8, 3.0)
EVALUATION_MAX_VOXELS = 1 << 23
VARIANTS_FILE = "phantoms.json"


def write_phantom_cases(folder: Path, *, count: int, seed: int = HELD_OUT_SEED) -> dict[str, str]:
    """Render ``count`` phantoms with random acquisitions into ``folder`` (VerSe layout).

    Returns:
        case name -> anatomical variant; also written to ``folder/phantoms.json``.
    """
    variants: dict[str, str] = {}
    for index in range(count):
        case = f"sub-phantom{index:03d}"
        variant = VARIANT_CYCLE[index % len(VARIANT_CYCLE)]
        anatomy = sample_anatomy(seed + index, variant=variant)
        rng = np.random.default_rng([seed, index])
        # Transitional cases get a field of view that shows the whole lumbar spine, or there is nothing to flag.
        kind = None if variant == "normal" else ("abdomen", "lumbar")[index // len(VARIANT_CYCLE) % 2]
        grid = random_grid(anatomy, rng, spacing_range=EVALUATION_SPACING_MM, max_voxels=EVALUATION_MAX_VOXELS,
                           kind=kind)
        ct, labels = render(anatomy, grid, realism=True, seed=seed + index)
        for kind, image, suffix in (("rawdata", ct, "_ct"), ("derivatives", labels, "_seg-vert_msk")):
            target = folder / kind / case
            target.mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(image, str(target / f"{case}{suffix}.nii.gz"), useCompression=True)
        variants[case] = variant
    (folder / VARIANTS_FILE).write_text(json.dumps(variants, indent=2) + "\n")
    return variants
