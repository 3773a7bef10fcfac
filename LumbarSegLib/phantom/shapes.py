"""Local frames and approximate signed distances (mm, negative inside) of primitives.

All functions work elementwise on float32 numpy arrays of local coordinates.
The distances are exact in sign (the labels depend only on the sign) and
first-order accurate in magnitude (used for partial volume and cortex depth).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

_EPS = 1e-6


@dataclass(frozen=True)
class Frame:
    """A rigid local frame: world = centre + axes @ local (axes columns are u, v, w)."""

    centre: tuple[float, float, float]
    axes: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    @classmethod
    def make(cls, centre, axes=None) -> Frame:
        matrix = np.eye(3) if axes is None else np.asarray(axes, float).reshape(3, 3)
        return cls(tuple(float(c) for c in centre), tuple(float(a) for a in matrix.ravel()))

    @property
    def matrix(self) -> np.ndarray:
        return np.asarray(self.axes, float).reshape(3, 3)

    @property
    def origin(self) -> np.ndarray:
        return np.asarray(self.centre, float)

    def to_world(self, local) -> np.ndarray:
        """World (LPS) coordinates of local points (..., 3)."""
        return self.origin + np.asarray(local, float) @ self.matrix.T

    def world_box(self, lo, hi) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned world box containing the local box [lo, hi]."""
        corners = np.array([[(lo, hi)[(c >> a) & 1][a] for a in range(3)] for c in range(8)], float)
        world = self.to_world(corners)
        return world.min(axis=0), world.max(axis=0)


def rotation(axis, angle: float) -> np.ndarray:
    """Rotation matrix about a unit ``axis`` by ``angle`` radians (Rodrigues)."""
    x, y, z = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def ellipse(u, v, a: float, b: float):
    """Signed distance to an ellipse with semi-axes a, b (2D, first order)."""
    k0 = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    k1 = np.sqrt((u / (a * a)) ** 2 + (v / (b * b)) ** 2)
    # The epsilons make the ratio tend to min(a, b) at the centre instead of 0/0.
    return (k0 - 1.0) * (k0 + _EPS) / (k1 + _EPS / np.minimum(a, b))


def ellipsoid(u, v, w, a: float, b: float, c: float):
    """Signed distance to an ellipsoid with semi-axes a, b, c (first order)."""
    k0 = np.sqrt((u / a) ** 2 + (v / b) ** 2 + (w / c) ** 2)
    k1 = np.sqrt((u / (a * a)) ** 2 + (v / (b * b)) ** 2 + (w / (c * c)) ** 2)
    return (k0 - 1.0) * (k0 + _EPS) / (k1 + _EPS / np.minimum(np.minimum(a, b), c))


def capsule(u, v, w, p0, p1, r0: float, r1: float | None = None):
    """Signed distance to a (tapered) capsule from p0 to p1 with radii r0 -> r1."""
    d = np.asarray(p1, float) - np.asarray(p0, float)
    length2 = max(float(d @ d), _EPS)
    du, dv, dw = u - p0[0], v - p0[1], w - p0[2]
    t = np.clip((du * d[0] + dv * d[1] + dw * d[2]) / length2, 0.0, 1.0)
    dist = np.sqrt((du - t * d[0]) ** 2 + (dv - t * d[1]) ** 2 + (dw - t * d[2]) ** 2)
    radius = r0 if r1 is None else r0 + (r1 - r0) * t
    return dist - radius


def box(u, v, w, half):
    """Signed distance to an axis-aligned box centred at 0 with half sizes ``half``."""
    qu, qv, qw = np.abs(u) - half[0], np.abs(v) - half[1], np.abs(w) - half[2]
    outside = np.sqrt(np.maximum(qu, 0) ** 2 + np.maximum(qv, 0) ** 2 + np.maximum(qw, 0) ** 2)
    return outside + np.minimum(np.maximum(np.maximum(qu, qv), qw), 0.0)


def union(*distances):
    """Union of shapes (minimum of their distances)."""
    out = distances[0]
    for d in distances[1:]:
        out = np.minimum(out, d)
    return out


def random_waves(rng: np.random.Generator, amplitude: float, wavelength=(3.0, 12.0), count: int = 4):
    """Parameters for ``waves``: ``count`` plane waves in random directions, total std ~ ``amplitude``."""
    rows = []
    for _ in range(count):
        d = rng.normal(size=3)
        k = 2 * np.pi / rng.uniform(*wavelength) * d / np.linalg.norm(d)
        rows.append((float(k[0]), float(k[1]), float(k[2]), float(rng.uniform(0, 2 * np.pi)),
                     float(amplitude / np.sqrt(count))))
    return tuple(rows)


def waves(u, v, w, params) -> np.ndarray:
    """A smooth random texture: sum of plane waves; params rows are (ku, kv, kw, phase, amplitude)."""
    out = np.zeros(np.broadcast(u, v, w).shape, np.float32)
    for ku, kv, kw, phase, amplitude in params:
        out += np.float32(amplitude) * np.sin(u * ku + v * kv + w * kw + phase)
    return out


@lru_cache(maxsize=32)
def _lattice(seed: int, order: int) -> np.ndarray:
    """Random unit-variance lattice, spline-prefiltered for interpolation of ``order``."""
    rng = np.random.default_rng(seed)
    lattice = ndimage.gaussian_filter(rng.standard_normal((32, 32, 32)), 0.6, mode="wrap")
    lattice = (lattice / lattice.std()).astype(np.float32)
    return ndimage.spline_filter(lattice, order, mode="grid-wrap") if order > 1 else lattice


def speckle(u, v, w, *, cell: float, seed: int, order: int = 1) -> np.ndarray:
    """Smooth unit-variance noise of physical coordinates (period 32 cells), e.g. trabecular texture."""
    scale = np.float32(1.0 / cell)
    coords = np.stack([np.ravel(u * scale), np.ravel(v * scale), np.ravel(w * scale)])
    out = ndimage.map_coordinates(_lattice(seed, order), coords, order=order, mode="grid-wrap", prefilter=False)
    return out.reshape(np.shape(u))


@dataclass(frozen=True)
class Capsule:
    """A tapered capsule in local coordinates whose w axis is stretched by ``stretch`` about ``pivot``.

    The stretch makes flat plates (laminae, spinous processes) from round capsules.
    """

    p0: tuple[float, float, float]
    p1: tuple[float, float, float]
    r0: float
    r1: float
    pivot: float = 0.0
    stretch: float = 1.0

    def box(self) -> tuple[np.ndarray, np.ndarray]:
        ends = np.array([self.p0, self.p1], float)
        pad = max(self.r0, self.r1) * np.array([1.0, 1.0, self.stretch]) + 1.0
        return ends.min(axis=0) - pad, ends.max(axis=0) + pad

    def __call__(self, u, v, w):
        squeeze = 1.0 / self.stretch
        p0 = (self.p0[0], self.p0[1], self.pivot + (self.p0[2] - self.pivot) * squeeze)
        p1 = (self.p1[0], self.p1[1], self.pivot + (self.p1[2] - self.pivot) * squeeze)
        return capsule(u, v, self.pivot + (w - self.pivot) * squeeze, p0, p1, self.r0, self.r1)


def min_into(out: np.ndarray, block, frame: Frame, box, function) -> None:
    """out = min(out, function(u, v, w)) on the voxels of ``block`` that may lie in the local ``box``."""
    window = block.window(frame, *box)
    if window is None:
        return
    u, v, w = block.local(frame)
    out[window] = np.minimum(out[window], function(u[window], v[window], w[window]))
