"""Anatomy model of a phantom patient (spine, pelvis, ribs, organs, implants) and its fields of view.

Everything is in LPS millimetres (x = patient left, y = posterior, z = superior).
``sampling.sample_anatomy`` draws one deterministically from a seed; rendering only
reads the sampled numbers.

Transitional anatomy (labels are the VerSe values, counted from above):
- ``"T13"``: a 13th rib-bearing vertebra (label 28) between T12 and L1;
- ``"L6"``: six rib-free lumbar vertebrae, the sixth (label 25) above the sacrum;
- ``"sacralized_L5"``: L5 (label 24) with broad transverse processes touching
  the sacral ala / iliac crest and a thin L5/S1 disc;
- ``"11_ribs"``: T12 bears no ribs but keeps label 19 (VerSe counts from
  above), so the first rib-free vertebra is T12, not L1.
Otherwise the last rib pair is at least 4 cm long, so "L1 = first vertebra
without ribs or with rib stumps under 4 cm" agrees with the labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .grid import Grid
from .shapes import Frame, rotation

VARIANTS = ("normal", "L6", "T13", "sacralized_L5", "11_ribs")
FOV_KINDS = ("abdomen", "lumbar", "partial", "thoracolumbar")

# Base body sizes (mm) by continuous position: T7 = 0 ... T12 = 5, L1 = 6 ... L5 = 10.
_WIDTH = np.array([30, 31, 32, 34, 36, 38, 40, 42, 45, 47, 50], float)
_DEPTH = np.array([24, 25, 26, 27, 27.5, 28, 30, 31, 32, 33, 35], float)
_HEIGHT = np.array([19, 20, 20.5, 21.5, 22.5, 23.5, 25, 26, 26.5, 27, 27], float)
_TP_LENGTH = np.array([24, 24, 24, 23, 20, 16, 18, 22, 28, 24, 20], float)
_SP_LENGTH = np.array([36, 36, 35, 33, 31, 30, 30, 31, 31, 29, 25], float)
_SP_ANGLE = np.radians([60, 58, 55, 48, 40, 32, 27, 25, 23, 23, 25])
_DISC = np.array([5, 5, 5.5, 6, 6.5, 7, 8, 9, 10, 11, 10], float)  # disc below the level


@dataclass(frozen=True)
class Material:
    """Intensity model of a structure; ``cortex`` > 0 makes a bone with a cortical shell."""

    hu: float
    texture: float = 0.0
    cortex: float = 0.0
    cortical_hu: float = 0.0
    gas_level: float | None = None   # world y below which (anterior, up when supine) is gas
    mottled_gas: float = 0.0          # fraction of gas bubbles (stool)


@dataclass(frozen=True)
class Blob:
    """An ellipsoid in a local frame."""

    name: str
    frame: Frame
    semi: tuple[float, float, float]
    material: Material


@dataclass(frozen=True)
class Tube:
    """A chain of tapered capsules through ``points`` with ``radii``; ``aspect`` scales world x."""

    name: str
    points: tuple[tuple[float, float, float], ...]
    radii: tuple[float, ...]
    material: Material
    aspect: float = 1.0


@dataclass(frozen=True)
class IliacWing:
    """The iliac wing: a piece of the shell of the pelvic 'bowl' ellipsoid, lateral to the SI joint.

    Offsets are relative to ``centre``; ``side`` is +1 for the patient's left.
    """

    name: str
    side: float
    centre: tuple[float, float, float]
    semi: tuple[float, float, float]
    medial: float      # |x| of the SI joint
    front: float       # anterior limit (y)
    crest: float       # crest height (z) at mid-depth
    bottom: float      # lower limit (z)
    material: Material


@dataclass(frozen=True)
class Vertebra:
    """One vertebra in its local frame (u = left, v = posterior, w = cranial; origin = body centre)."""

    label: int
    frame: Frame
    width: float
    depth: float
    height: float
    concavity: float
    wedge: float                # anterior height loss of a compression fracture (mm)
    cancellous_hu: float
    cortical_hu: float
    cortex: float
    canal: tuple[float, float]  # half width, half depth
    pedicle: float              # pedicle radius (x)
    tp_length: float
    tp_radius: float
    tp_drop: float              # caudal offset of the transverse process tip (sacralization)
    sp_length: float
    sp_angle: float
    thoracic: bool
    ribs: tuple[float, float]   # rib length right, left (0 = none)
    texture: tuple[tuple[float, ...], ...] = ()
    trabecular: float = 40.0    # HU amplitude of the trabecular speckle
    osteophyte: float = 0.0     # radius (mm) of the anterolateral endplate-rim osteophytes, 0 = none
    sclerosis: float = 0.0      # extra HU of the subchondral bone under the endplates (degeneration)
    arch: tuple[float, float, float] = (1.0, 1.0, 1.0)  # scale of lamina thickness, facets, spinous height

    def local_box(self) -> tuple[np.ndarray, np.ndarray]:
        reach = self.width / 2 + self.tp_length + self.tp_radius + 2
        back = self.depth / 2 + 2 * self.canal[1] + 6 + self.sp_length + 8
        lo = np.array([-reach, -self.depth / 2 - 2, -self.height / 2 - 14 - self.sp_length * np.sin(self.sp_angle)])
        hi = np.array([reach, back, self.height / 2 + 14])
        return lo, hi

    def world_box(self) -> tuple[np.ndarray, np.ndarray]:
        return self.frame.world_box(*self.local_box())


@dataclass(frozen=True)
class SacralSegment:
    frame: Frame
    width: float
    depth: float
    height: float
    ala: float                   # half width of the alae (0 = none)


@dataclass(frozen=True)
class Body:
    """Torso outline: elliptic cylinder flattened on the back, with hips below ``hip_z``."""

    centre_x: float
    centre_y: float
    half_width: float
    half_depth: float
    back_y: float
    fat: float
    wall: float
    hip_z: float
    hip_gain: float
    table_y: float
    table_thickness: float
    fat_hu: float
    muscle_hu: float


@dataclass(frozen=True)
class Anatomy:
    """A sampled patient; everything needed to render it deterministically."""

    seed: int
    variant: str
    levels: tuple[int, ...]
    vertebrae: tuple[Vertebra, ...]
    sacrum: tuple[SacralSegment, ...]
    sacrum_material: Material
    body: Body
    soft: tuple = ()          # Blob/Tube soft tissue, painted in order before bones
    bones: tuple = ()         # unlabelled Blob/Tube bones (ribs, pelvis, femora)
    metal: tuple = ()         # Tube implants (pedicle screws, rods)
    lesions: tuple = ()       # Blob bone lesions inside vertebral bodies (keep the vertebra label)
    fracture_level: int | None = None
    listhesis_level: int | None = None   # label of the vertebra slipped forward (with all above)
    osteoporosis: bool = False
    disc_heights: tuple[float, ...] = field(default=())  # below each vertebra
    disc_hu: tuple[float, ...] = ()                      # mean HU of the disc below each vertebra
    vacuum_discs: tuple[int, ...] = ()                   # labels above degenerated discs with a gas cleft

    def vertebra(self, label: int) -> Vertebra:
        for v in self.vertebrae:
            if v.label == label:
                return v
        raise KeyError(label)

    def level_box(self, label: int) -> tuple[np.ndarray, np.ndarray]:
        """LPS box of one labelled level (vertebra or sacrum)."""
        if label == 26:
            boxes = [s.frame.world_box((-s.width / 2 - s.ala, -s.depth / 2 - 2, -s.height / 2),
                                       (s.width / 2 + s.ala, s.depth / 2 + 30, s.height / 2)) for s in self.sacrum]
            return np.min([b[0] for b in boxes], axis=0), np.max([b[1] for b in boxes], axis=0)
        return self.vertebra(label).world_box()

    def lumbar_box_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """LPS min/max corner of the union of L1..L5 (and L6)."""
        boxes = [self.level_box(v) for v in self.levels if 20 <= v <= 25]
        return np.min([b[0] for b in boxes], axis=0), np.max([b[1] for b in boxes], axis=0)

    def centre(self, label: int) -> np.ndarray:
        if label == 26:
            return self.sacrum[0].frame.origin
        return self.vertebra(label).frame.origin

    def field_of_view(self, kind: str, *, spacing, direction=None, rng: np.random.Generator | None = None) -> Grid:
        """A grid covering the field of view ``kind`` (see ``FOV_KINDS``) with random margins from ``rng``."""
        lo, hi = self.fov_box(kind, rng)
        return Grid.covering(lo, hi, spacing=spacing, direction=direction)

    def fov_box(self, kind: str, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """LPS box of a field of view ``kind``."""
        def uniform(a: float, b: float) -> float:
            return (a + b) / 2 if rng is None else float(rng.uniform(a, b))

        labels = list(self.levels)
        spine = [label for label in labels if label != 26]
        if kind == "abdomen":
            top_label = 17 if 17 in labels else spine[0]
            top = self.centre(top_label)[2] + uniform(-20, 30)
            bottom = self.sacrum[0].frame.origin[2] - uniform(130, 190)
            body = self.body
            front, table = body.centre_y - body.half_depth, body.table_y + body.table_thickness
            half = min(max(body.half_width * (1 + body.hip_gain) + uniform(5, 40),
                           (table - front) / 2 + uniform(5, 30), uniform(170, 225)), 250.0)
            cx, cy = body.centre_x + uniform(-10, 10), (front + table) / 2 + uniform(-10, 10)
            lo, hi = np.array([cx - half, cy - half, bottom]), np.array([cx + half, cy + half, top])
            if rng is not None and rng.random() < 0.4:  # cropped to the body front-to-back, as some archives store it
                lo[1], hi[1] = front - uniform(5, 20), table + uniform(-10, 20)
            return lo, hi
        if kind == "lumbar":
            first = self.level_box(_first_lumbar(labels))
            top = first[1][2] - uniform(0.2, 0.7) * (first[1][2] - first[0][2]) + uniform(0, 25)
            bottom = self.sacrum[1].frame.origin[2] - uniform(0, 40)
            return self._spine_crop(bottom, top, uniform(100, 150), uniform)
        if kind == "thoracolumbar":
            top = self.level_box(15 if 15 in labels else spine[0])[1][2] - uniform(0, 15)
            bottom = self.level_box(22)[0][2] + uniform(-10, 15)
            return self._spine_crop(bottom, top, uniform(110, 180), uniform)
        if kind == "partial":
            count = int(round(uniform(2, 4)))
            start = int(round(uniform(0, len(labels) - count)))
            boxes = [self.level_box(v) for v in labels[start:start + count]]
            top = max(b[1][2] for b in boxes) - uniform(0, 10)
            bottom = min(b[0][2] for b in boxes) + uniform(0, 10)
            return self._spine_crop(bottom, top, uniform(90, 200), uniform)
        raise ValueError(f"unknown field of view {kind!r}; expected one of {FOV_KINDS}")

    def _spine_crop(self, bottom: float, top: float, width: float, uniform) -> tuple[np.ndarray, np.ndarray]:
        middle = [v.frame.origin for v in self.vertebrae if bottom - 30 <= v.frame.origin[2] <= top + 30]
        if not middle:
            middle = [self.sacrum[0].frame.origin]
        centre = np.mean(middle, axis=0)
        cx = centre[0] + uniform(-8, 8)
        cy = centre[1] + 22 + uniform(-10, 10)
        return (np.array([cx - width / 2, cy - width / 2, bottom]),
                np.array([cx + width / 2, cy + width / 2, top]))


def _first_lumbar(labels: list[int]) -> int:
    return 20 if 20 in labels else min(v for v in labels if v > 19)


def level_plan(variant: str) -> list[tuple[int, float]]:
    """(VerSe label, continuous size position) of the mobile vertebrae, cranial to caudal."""
    plan = [(14 + i, float(i)) for i in range(6)]             # T7..T12
    if variant == "T13":
        plan.append((28, 5.5))
    lumbar = 6 if variant == "L6" else 5
    labels = [20, 21, 22, 23, 24, 25][:lumbar]
    plan += [(label, 6 + 4 * k / (lumbar - 1)) for k, label in enumerate(labels)]
    return plan


def interpolate(table: np.ndarray, position: float) -> float:
    return float(np.interp(position, np.arange(len(table)), table))


def frame_along(point: np.ndarray, tangent: np.ndarray, twist: float) -> Frame:
    """A frame at ``point`` whose w axis is ``tangent`` and u is the patient's left, twisted by ``twist``."""
    w = tangent / np.linalg.norm(tangent)
    u = np.array([1.0, 0.0, 0.0]) - w[0] * w
    u = rotation(w, twist) @ (u / np.linalg.norm(u))
    v = np.cross(w, u)
    return Frame.make(point, np.column_stack([u, v, w]))
