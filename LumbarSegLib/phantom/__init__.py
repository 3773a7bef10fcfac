"""Procedural CT phantoms with exact VerSe labels (training data, tests, demo, benchmark).

The anatomy lives in LPS millimetres; ``render`` evaluates it at the physical
position of every voxel of any grid, so labels agree across grids.
"""

from __future__ import annotations

import SimpleITK as sitk

from .acquisition import random_grid
from .anatomy import FOV_KINDS, VARIANTS, Anatomy
from .grid import Grid
from .render import render
from .sampling import sample_anatomy

__all__ = ["FOV_KINDS", "VARIANTS", "Anatomy", "Grid", "make_phantom", "random_grid", "render", "sample_anatomy"]


def make_phantom(seed: int = 0, *, kind: str = "abdomen", spacing=(1.5, 1.5, 1.5), variant: str | None = "normal",
                 direction=None, realism: bool = True) -> tuple[sitk.Image, sitk.Image, Anatomy]:
    """A phantom CT, its labels and its anatomy, on the field of view ``kind`` (default margins)."""
    anatomy = sample_anatomy(seed, variant=variant)
    grid = anatomy.field_of_view(kind, spacing=spacing, direction=direction)
    ct, labels = render(anatomy, grid, realism=realism, seed=seed)
    return ct, labels, anatomy

