"""Benchmark inputs: clinical-size phantom CTs rendered once and cached as NIfTI, and the real CT.

The phantoms lie on exact clinical grids (matrix, spacing, int16) centred on the
phantom's abdomen, so reading, resampling and writing cost what they cost on a
scanner's output. They are cached outside the repository, keyed by everything
that defines them (grid, seed, LumbarSeg version, a hash of the generator's
source), and written as ``.nii.gz`` so that reading is measured for real.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from LumbarSegLib import __version__, phantom
from LumbarSegLib.phantom import Anatomy, Grid, render, sample_anatomy

REPO = Path(__file__).resolve().parent.parent
REAL_CT = REPO.parent / "shared" / "data" / "realct" / "rawdata" / "sub-tsexample" / "sub-tsexample_ct.nii.gz"
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lumbarseg-bench"


@dataclass(frozen=True)
class PhantomInput:
    """A phantom CT on a clinical grid: matrix (x, y, z) voxels at spacing (x, y, z) mm."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    seed: int = 0

    @property
    def key(self) -> str:
        size = "x".join(str(n) for n in self.size)
        spacing = "x".join(f"{s:g}" for s in self.spacing)
        return f"phantom_{size}_{spacing}mm_seed{self.seed}_v{__version__}_{generator_digest()}"


@functools.lru_cache(maxsize=1)
def generator_digest() -> str:
    """A short hash of the phantom generator's source, so a changed generator never reuses a stale cache."""
    digest = hashlib.sha256()
    for source in sorted(Path(phantom.__file__).parent.glob("*.py")):
        digest.update(source.read_bytes())
    return digest.hexdigest()[:10]


PHANTOMS: dict[str, PhantomInput] = {
    "large": PhantomInput(size=(512, 512, 600), spacing=(0.78, 0.78, 1.0)),
    "medium": PhantomInput(size=(512, 512, 300), spacing=(0.7, 0.7, 2.0)),
}
INPUT_NAMES = (*PHANTOMS, "real")


def clinical_grid(anatomy: Anatomy, size: tuple[int, int, int], spacing: tuple[float, float, float]) -> Grid:
    """An axial LPS grid of exactly ``size`` voxels at ``spacing``, centred on the anatomy's abdomen view."""
    lo, hi = anatomy.fov_box("abdomen")
    centre = (np.asarray(lo) + np.asarray(hi)) / 2
    origin = centre - (np.asarray(size) - 1) * np.asarray(spacing) / 2
    return Grid(size=tuple(size), spacing=tuple(float(s) for s in spacing), origin=tuple(float(o) for o in origin))


def phantom_path(spec: PhantomInput, cache_dir: Path) -> Path:
    """The cached NIfTI of a phantom input, rendered (once) when missing."""
    path = cache_dir / f"{spec.key}.nii.gz"
    if not path.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        anatomy = sample_anatomy(spec.seed, variant="normal")
        ct, _ = render(anatomy, clinical_grid(anatomy, spec.size, spec.spacing), seed=spec.seed)
        partial = path.with_name(f".{path.name}.partial.nii.gz")
        sitk.WriteImage(ct, str(partial), useCompression=True)
        partial.replace(path)
    return path


def input_path(name: str, cache_dir: Path, *, real_ct: Path = REAL_CT) -> Path | None:
    """Path of the named benchmark input; None for the real CT when it is absent."""
    if name == "real":
        return real_ct if real_ct.is_file() else None
    if name not in PHANTOMS:
        raise ValueError(f"unknown input {name!r}; expected one of {', '.join(INPUT_NAMES)}")
    return phantom_path(PHANTOMS[name], cache_dir)
