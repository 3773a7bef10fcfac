"""Training samples for both networks, drawn deterministically from a sample index.

Three sources, mixed by the config's probabilities:

- ``phantom``: a procedural CT phantom rendered directly onto a randomly
  rotated and scaled patch grid (exact labels, unlimited variety);
- ``real``: real CT cases with their (possibly partial) vertebra masks,
  resampled once to the network grid, then augmented;
- ``synth``: SynthSeg-style images generated from the real label maps.

A sample is the network input (normalised HU), the class target and a
``valid`` mask that is False where the label is unknown: outside the levels a
partially labelled real case annotates.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from LumbarSegLib import geometry
from LumbarSegLib.intensity import AIR_HU, normalise_hu
from LumbarSegLib.io import read_ct
from LumbarSegLib.labels import CLASS_OF_VERSE, L6_VALUE, LUMBAR_VALUES, lookup_table
from LumbarSegLib.phantom import VARIANTS, Grid, render, sample_anatomy
from LumbarSegLib.training.augment import random_intensity, random_spatial
from LumbarSegLib.training.synth import synth_image

CLASS_LOOKUP = lookup_table(CLASS_OF_VERSE)
LUMBAR_LOOKUP = lookup_table({value: 1 for value in LUMBAR_VALUES + (L6_VALUE,)})


@dataclass
class Sample:
    """One training sample: (z, y, x) arrays."""

    image: np.ndarray
    target: np.ndarray
    valid: np.ndarray


@dataclass
class RealCase:
    """A real CT and its vertebra mask on the canonical grid of one network."""

    name: str
    hu: np.ndarray
    verse: np.ndarray
    valid: np.ndarray


def labelled_range(verse: np.ndarray) -> np.ndarray:
    """Valid mask of a partially labelled scan: the axial slabs between its first and last labelled voxel.

    A vertebra that is not labelled is unknown, not background, when it lies
    beyond the annotated levels; within the annotated range every vertebra is
    labelled, so background there is true background. Axis 0 is cranio-caudal
    on the canonical grid.
    """
    rows = np.flatnonzero(verse.any(axis=(1, 2)))
    valid = np.zeros(verse.shape, dtype=bool)
    if rows.size:
        valid[rows[0] : rows[-1] + 1] = True
    return valid


def load_real_cases(data_dir: Path, names: list[str], spacing_mm: float) -> list[RealCase]:
    """Read real CTs and masks (VerSe layout) and resample them to the canonical grid."""
    cases = []
    for name in names:
        ct = read_ct(data_dir / "rawdata" / name / f"{name}_ct.nii.gz")
        mask = sitk.ReadImage(str(data_dir / "derivatives" / name / f"{name}_seg-vert_msk.nii.gz"))
        reference = geometry.canonical_reference(geometry.physical_box(ct), spacing_mm)
        hu = sitk.GetArrayFromImage(geometry.resample_image(ct, reference))
        verse = sitk.GetArrayFromImage(geometry.resample_labels(sitk.Cast(mask, sitk.sitkUInt8), reference))
        cases.append(RealCase(name=name, hu=hu, verse=verse, valid=labelled_range(verse)))
    return cases


def patch_grid(center_lps: np.ndarray, patch_zyx: tuple[int, int, int], spacing_mm: float,
               rotation: np.ndarray) -> Grid:
    """A patch-shaped grid centred on a point, with the given direction matrix."""
    size = np.array(patch_zyx[::-1])
    origin = center_lps - rotation @ ((size - 1) / 2 * spacing_mm)
    return Grid(size=tuple(int(n) for n in size), spacing=(spacing_mm,) * 3,
                origin=tuple(float(o) for o in origin), direction=tuple(float(d) for d in rotation.ravel()))


def small_rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """A random rotation matrix with each Euler angle within +-max_deg."""
    return Rotation.from_euler("xyz", rng.uniform(-max_deg, max_deg, 3), degrees=True).as_matrix()


def cut_field_of_view(hu: np.ndarray, verse: np.ndarray, rng: np.random.Generator) -> None:
    """Simulate a tight scan: blank (air, background) random slabs at the volume's faces, in place.

    Cranial/caudal cuts mimic partial coverage; in-plane cuts mimic the small
    reconstruction fields of view of spine-targeted scans.
    """
    for axis, probability in ((0, 0.5), (1, 0.25), (2, 0.25)):
        length = hu.shape[axis]
        for at_start in (True, False):
            if rng.random() >= probability:
                continue
            depth = int(rng.integers(1, max(2, length // 3)))
            region = [slice(None)] * 3
            region[axis] = slice(0, depth) if at_start else slice(length - depth, length)
            hu[tuple(region)] = AIR_HU
            verse[tuple(region)] = 0


class SampleFactory:
    """Deterministic sample index -> training sample for one network.

    Args:
        kind: ``xunet`` (multi-class crop around the lumbar spine) or
            ``localizer`` (binary lumbar mask on a coarse whole-body grid).
        config: the training config (see ``training/configs``).
        real_cases: real cases on this network's grid.
    """

    def __init__(self, *, kind: str, config: dict, real_cases: list[RealCase]) -> None:
        self.kind = kind
        self.config = config
        self.spacing = float(config["spacing_mm"])
        self.patch = tuple(int(n) for n in config["patch"])
        self.real_cases = real_cases
        sources = dict(config["sources"])
        if not real_cases:
            sources = {"phantom": 1.0}
        self.source_names = list(sources)
        weights = np.array([sources[name] for name in self.source_names], dtype=float)
        self.source_weights = weights / weights.sum()

    def __call__(self, index: int) -> Sample:
        rng = np.random.default_rng([int(self.config["seed"]), index])
        source = self.source_names[rng.choice(len(self.source_names), p=self.source_weights)]
        if source == "phantom":
            hu, verse, valid = self._phantom(rng, index)
        else:
            hu, verse, valid = self._real(rng, synthetic=source == "synth")
        hu = random_intensity(hu, rng, spacing_mm=self.spacing)
        lookup = LUMBAR_LOOKUP if self.kind == "localizer" else CLASS_LOOKUP
        return Sample(image=normalise_hu(hu), target=lookup[verse], valid=valid)

    def _phantom(self, rng: np.random.Generator, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # Transitional anatomy is rare in patients but is what the level labels hinge on: oversample it.
        transitional = rng.random() < float(self.config["transitional_share"])
        variant = str(rng.choice(VARIANTS[1:])) if transitional else "normal"
        anatomy = sample_anatomy(int(rng.integers(2**31)), variant=variant)
        low, high = anatomy.lumbar_box_mm()
        box_center = (np.asarray(low) + np.asarray(high)) / 2
        if self.kind == "localizer":
            center = box_center + rng.normal(0, 60, 3) * np.array([1, 1, 1.5])
            rotation = small_rotation(rng, 10)
            spacing = self.spacing * rng.uniform(0.9, 1.1)
        else:
            if rng.random() < 0.7:
                center = box_center + rng.normal(0, 8, 3)
            else:
                center = rng.uniform(low, high)
            rotation = small_rotation(rng, 12)
            spacing = self.spacing * rng.uniform(0.88, 1.12)
        grid = patch_grid(center, self.patch, spacing, rotation)
        ct, labels = render(anatomy, grid, realism=True, seed=int(rng.integers(2**31)))
        hu = sitk.GetArrayFromImage(ct).astype(np.float32)
        verse = sitk.GetArrayFromImage(labels)
        if rng.random() < 0.3:
            cut_field_of_view(hu, verse, rng)
        return hu, verse, np.ones(verse.shape, dtype=bool)

    def _real(self, rng: np.random.Generator, *, synthetic: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        case = self.real_cases[int(rng.integers(len(self.real_cases)))]
        if synthetic:
            # A synthetic image has bone only where the map has labels, so every voxel's label is known.
            mode = "ct" if rng.random() < 0.8 else "random"
            hu = synth_image(case.verse, rng, spacing_mm=self.spacing, priors=None, mode=mode)
            known = np.ones_like(case.valid)
        else:
            hu, known = case.hu, case.valid
        labelled = np.argwhere(case.verse > 0)
        if self.kind == "localizer":
            center = np.array(case.verse.shape) / 2 + rng.normal(0, 5, 3)
        else:
            center = labelled[int(rng.integers(len(labelled)))] + rng.normal(0, 3, 3)
        image, verse, valid = random_spatial(
            hu, case.verse, known, rng, spacing_mm=self.spacing, out_shape=self.patch, center_vox=center,
        )
        return image, verse, valid
