"""Voxel grids in LPS physical space, with SimpleITK conventions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk


@dataclass(frozen=True)
class Grid:
    """A SimpleITK-style voxel grid: point = origin + direction @ (spacing * index).

    ``direction`` is row-major like ``sitk.Image.GetDirection()``; its columns
    are the physical (LPS) directions of the index axes i, j, k.
    """

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    @classmethod
    def from_image(cls, image: sitk.Image) -> Grid:
        """The grid of a SimpleITK image."""
        return cls(
            size=tuple(int(n) for n in image.GetSize()),
            spacing=tuple(float(s) for s in image.GetSpacing()),
            origin=tuple(float(o) for o in image.GetOrigin()),
            direction=tuple(float(d) for d in image.GetDirection()),
        )

    @classmethod
    def covering(
        cls,
        lo: np.ndarray,
        hi: np.ndarray,
        *,
        spacing,
        direction=None,
    ) -> Grid:
        """The smallest grid with ``direction`` and ``spacing`` that covers the LPS box [lo, hi]."""
        matrix = np.eye(3) if direction is None else np.asarray(direction, float).reshape(3, 3)
        spacing = np.broadcast_to(np.asarray(spacing, float), (3,))
        corners = np.array([[(lo, hi)[(c >> a) & 1][a] for a in range(3)] for c in range(8)], float)
        # Coordinates of the corners along each (orthonormal) grid axis.
        along = corners @ matrix
        start, stop = along.min(axis=0), along.max(axis=0)
        size = np.maximum(np.ceil((stop - start) / spacing - 1e-6).astype(int) + 1, 1)
        # Centre the voxel lattice on the box.
        start = (start + stop) / 2 - (size - 1) * spacing / 2
        origin = matrix @ start
        return cls(
            size=tuple(int(n) for n in size),
            spacing=tuple(float(s) for s in spacing),
            origin=tuple(float(o) for o in origin),
            direction=tuple(float(d) for d in matrix.ravel()),
        )

    @property
    def matrix(self) -> np.ndarray:
        """3x3 direction matrix (columns = index axes in LPS)."""
        return np.asarray(self.direction, float).reshape(3, 3)

    @property
    def index_to_physical(self) -> np.ndarray:
        """3x3 matrix M with point = origin + M @ index."""
        return self.matrix * np.asarray(self.spacing, float)[None, :]

    @property
    def shape(self) -> tuple[int, int, int]:
        """Numpy array shape (z, y, x) as SimpleITK's GetArrayFromImage returns it."""
        return tuple(reversed(self.size))

    def physical_to_index(self, points: np.ndarray) -> np.ndarray:
        """Continuous indices (n, 3) of physical points (n, 3)."""
        inverse = np.linalg.inv(self.index_to_physical)
        return (np.asarray(points, float) - np.asarray(self.origin)) @ inverse.T

    def corners(self) -> np.ndarray:
        """The 8 corner voxel centres in LPS (8, 3)."""
        last = np.asarray(self.size) - 1
        index = np.array([[((c >> a) & 1) * last[a] for a in range(3)] for c in range(8)], float)
        return np.asarray(self.origin) + index @ self.index_to_physical.T

    def reference_image(self, pixel_type: int = sitk.sitkUInt8) -> sitk.Image:
        """An empty SimpleITK image on this grid (e.g. a resampling reference)."""
        image = sitk.Image([int(n) for n in self.size], pixel_type)
        self.apply_to(image)
        return image

    def apply_to(self, image: sitk.Image) -> sitk.Image:
        """Set this grid's spacing, origin and direction on ``image`` (same size) and return it."""
        image.SetSpacing([float(s) for s in self.spacing])
        image.SetOrigin([float(o) for o in self.origin])
        image.SetDirection([float(d) for d in self.direction])
        return image

    @property
    def voxel_count(self) -> int:
        return int(np.prod(self.size))
