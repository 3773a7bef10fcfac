"""Rendering an Anatomy onto any voxel grid (oblique, flipped, permuted, anisotropic)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .acquisition import apply_acquisition, sample_acquisition
from .anatomy import Anatomy
from .grid import Grid
from .shapes import Frame
from .structures import Context, Structure, structures

_SLAB_VOXELS = 1 << 21  # bounds the temporary arrays of one slab (~8 MB each)
AIR_HU = -1000.0


class Block:
    """A box of voxel indices [k0:k1, j0:j1, i0:i1] of a grid; gives local coordinates of its voxels."""

    def __init__(self, grid: Grid, k: slice, j: slice, i: slice):
        self.matrix = grid.index_to_physical
        self.inverse = np.linalg.inv(self.matrix)
        self.origin = np.asarray(grid.origin, float)
        self.i = np.arange(i.start, i.stop, dtype=np.float32)
        self.j = np.arange(j.start, j.stop, dtype=np.float32)
        self.k = np.arange(k.start, k.stop, dtype=np.float32)
        self.shape = (len(self.k), len(self.j), len(self.i))
        self.start = np.array([i.start, j.start, k.start])
        self._cache: dict[Frame, tuple] = {}

    def window(self, frame: Frame, lo, hi) -> tuple[slice, slice, slice] | None:
        """Slices (k, j, i) of this block holding every voxel inside the local box [lo, hi] of ``frame``."""
        corners = frame.to_world(_corners(lo, hi))
        index = (corners - self.origin) @ self.inverse.T - self.start
        first = np.maximum(np.floor(index.min(axis=0)).astype(int), 0)
        last = np.minimum(np.ceil(index.max(axis=0)).astype(int) + 1, self.shape[::-1])
        if np.any(last <= first):
            return None
        return slice(first[2], last[2]), slice(first[1], last[1]), slice(first[0], last[0])

    def local(self, frame: Frame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Coordinates (u, v, w) of the voxel centres in ``frame``, float32 arrays (k, j, i)."""
        if frame not in self._cache:
            rot = frame.matrix.T
            a = rot @ self.matrix
            b = rot @ (self.origin - frame.origin)
            self._cache[frame] = tuple(
                (float(a[r, 2]) * self.k + float(b[r]))[:, None, None]
                + (float(a[r, 1]) * self.j)[None, :, None]
                + (float(a[r, 0]) * self.i)[None, None, :]
                for r in range(3))
        return self._cache[frame]


def _corners(lo, hi) -> np.ndarray:
    return np.array([[(lo, hi)[(c >> a) & 1][a] for a in range(3)] for c in range(8)], float)


def index_boxes(grid: Grid, items: tuple[Structure, ...]) -> list[tuple[int, ...] | None]:
    """Per structure, the voxel index box (i0, i1, j0, j1, k0, k1) that may touch it, or None."""
    inverse = np.linalg.inv(grid.index_to_physical)
    origin = np.asarray(grid.origin, float)
    size = np.asarray(grid.size)
    boxes = []
    for item in items:
        lo = np.maximum(item.lo, -1e6)
        hi = np.minimum(item.hi, 1e6)
        index = (_corners(lo, hi) - origin) @ inverse.T
        start = np.maximum(np.floor(index.min(axis=0)).astype(int) - 1, 0)
        stop = np.minimum(np.ceil(index.max(axis=0)).astype(int) + 2, size)
        boxes.append(None if np.any(stop <= start) else (start[0], stop[0], start[1], stop[1], start[2], stop[2]))
    return boxes


def paint(anatomy: Anatomy, grid: Grid, *, soft: bool) -> tuple[np.ndarray, np.ndarray]:
    """Float32 HU and uint8 label arrays (z, y, x) of the noiseless anatomy on ``grid``.

    A structure labels every voxel it covers at all (signed distance below half a voxel),
    the way annotators label a bone through its partial-volume halo; later structures win.
    """
    items = structures(anatomy)
    boxes = index_boxes(grid, items)
    ct = np.full(grid.shape, AIR_HU, np.float32)
    labels = np.zeros(grid.shape, np.uint8)
    spacing = np.asarray(grid.spacing)
    ctx = Context(h=float(np.cbrt(np.prod(spacing))), soft=soft)
    label_reach = np.float32(0.5 * ctx.h)
    nx, ny, nz = grid.size
    slab = max(1, _SLAB_VOXELS // (nx * ny))
    for k0 in range(0, nz, slab):
        k1 = min(nz, k0 + slab)
        for item, box in zip(items, boxes):
            if box is None or box[5] <= k0 or box[4] >= k1:
                continue
            ks = slice(max(box[4], k0), min(box[5], k1))
            js, is_ = slice(box[2], box[3]), slice(box[0], box[1])
            block = Block(grid, ks, js, is_)
            sdf, hu = item.field(block, ctx)
            target = ct[ks, js, is_]
            if soft:
                alpha = np.clip(np.float32(0.5) - sdf / np.float32(ctx.h), 0.0, 1.0)
                target += alpha * (hu - target)
            else:
                np.copyto(target, np.broadcast_to(hu, target.shape).astype(np.float32), where=sdf < 0)
            if item.label is not None:
                labels[ks, js, is_][sdf < label_reach] = item.label
    return ct, labels


def _paint_thick_slices(anatomy: Anatomy, grid: Grid, *, soft: bool) -> tuple[np.ndarray, np.ndarray, int | None]:
    """Paint a thick axis supersampled: HU box-averaged over the slice (its profile) when ``soft``,
    else the exact HU at the voxel centre; labels from every sub-slice (see ``_covering_labels``).

    Returns (HU, labels, grid axis that got its slice profile or None). The odd factor puts one
    sub-slice at each voxel centre.
    """
    spacing = np.asarray(grid.spacing, float)
    axis = int(np.argmax(spacing))
    factor = int(np.ceil(spacing[axis] / max(spacing.min(), 1.5)))
    if spacing[axis] < 1.5 * spacing.min() or factor < 2:
        return (*paint(anatomy, grid, soft=soft), None)
    factor = min(factor | 1, 7)
    fine_spacing = spacing.copy()
    fine_spacing[axis] /= factor
    size = np.array(grid.size)
    size[axis] *= factor
    shift = -(factor - 1) / 2 * fine_spacing[axis] * grid.matrix[:, axis]
    fine = Grid(size=tuple(int(n) for n in size), spacing=tuple(fine_spacing),
                origin=tuple(np.asarray(grid.origin) + shift), direction=grid.direction)
    ct, labels = paint(anatomy, fine, soft=soft)
    array_axis = 2 - axis
    shape = list(grid.shape)
    shape.insert(array_axis + 1, factor)
    ct, labels = ct.reshape(shape), labels.reshape(shape)
    if soft:
        ct = ct.mean(axis=array_axis + 1, dtype=np.float32)
    else:
        ct = np.ascontiguousarray(np.take(ct, (factor - 1) // 2, axis=array_axis + 1))
    return ct, _covering_labels(labels, axis=array_axis + 1), axis if soft else None


def _covering_labels(sub_labels: np.ndarray, *, axis: int) -> np.ndarray:
    """One label per thick voxel: its centre sub-slice's, else that of the nearest labelled sub-slice."""
    factor = sub_labels.shape[axis]
    centre = (factor - 1) // 2
    labels = np.ascontiguousarray(np.take(sub_labels, centre, axis=axis))
    for offset in range(1, centre + 1):  # the factor is odd: sub-slices pair up around the centre
        for index in (centre - offset, centre + offset):
            np.copyto(labels, np.take(sub_labels, index, axis=axis), where=labels == 0)
    return labels


def render(anatomy: Anatomy, grid: Grid, *, realism: bool = True, seed: int | None = None
           ) -> tuple[sitk.Image, sitk.Image]:
    """Return (CT int16 HU, labels uint8 VerSe values) on exactly ``grid``.

    ``realism=False`` gives exact, noiseless, unblurred intensities (for geometry tests);
    otherwise partial volume, PSF blur, metal streaks and noise drawn from ``seed``
    (default: the anatomy's seed).
    """
    ct, labels, profiled = _paint_thick_slices(anatomy, grid, soft=realism)
    if realism:
        rng = np.random.default_rng(np.random.SeedSequence([anatomy.seed if seed is None else int(seed), 9917]))
        acquisition = sample_acquisition(rng)
        apply_acquisition(ct, grid, anatomy, acquisition, rng, profiled_axis=profiled)
    np.clip(ct, -1024, 3071, out=ct)
    np.rint(ct, out=ct)
    image = grid.apply_to(sitk.GetImageFromArray(ct.astype(np.int16)))
    del ct
    label_image = grid.apply_to(sitk.GetImageFromArray(labels))
    return image, label_image

