"""Acquisition: random grids (field of view, spacing, orientation) and scanner effects.

Scanner effects act on the noiseless float32 HU array in place: PSF blur (plus the
slice profile of thick slices), beam-hardening-like streaks around metal in the
physical axial plane, and (optionally correlated) Gaussian noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .anatomy import FOV_KINDS, Anatomy
from .grid import Grid
from .shapes import rotation

_NOISE_SLAB = 1 << 22


@dataclass(frozen=True)
class Acquisition:
    noise_sigma: float      # HU
    noise_grain: float      # in-slice correlation length of the noise, voxels
    psf_mm: float           # PSF sigma, mm
    sharpen: float          # edge overshoot of sharp (bone) kernels, 0 = soft kernel
    streaks: float          # metal streak amplitude, HU
    offset: float           # calibration offset, HU
    circle: float           # reconstruction circle radius / patient half size, 0 = no circle


def sample_acquisition(rng: np.random.Generator) -> Acquisition:
    """Random scanner settings: a soft-tissue kernel (70 %) or a sharp, noisy bone kernel."""
    if rng.random() < 0.7:
        sigma, grain, psf, sharpen = np.exp(rng.uniform(np.log(5), np.log(40))), rng.uniform(0, 1), \
            rng.uniform(0.4, 0.9), 0.0
    else:
        sigma, grain, psf, sharpen = np.exp(rng.uniform(np.log(25), np.log(120))), rng.uniform(0, 0.5), \
            rng.uniform(0.2, 0.5), rng.uniform(0.3, 1.2)
    return Acquisition(noise_sigma=float(sigma), noise_grain=float(grain), psf_mm=float(psf),
                       sharpen=float(sharpen), streaks=float(rng.uniform(150, 500)), offset=float(rng.normal(0, 6)),
                       circle=float(rng.uniform(1.0, 1.25)) if rng.random() < 0.3 else 0.0)


def apply_acquisition(ct: np.ndarray, grid: Grid, anatomy: Anatomy, acquisition: Acquisition,
                      rng: np.random.Generator, *, profiled_axis: int | None = None) -> None:
    """Blur, metal streaks and noise, in place on ``ct`` (z, y, x) of ``grid``.

    The blur is the PSF plus a slice/voxel profile, except along ``profiled_axis`` (grid axis
    whose slice profile was already integrated by supersampling).
    """
    spacing = np.asarray(grid.spacing)[::-1]  # array axis order
    profile = 0.4 * spacing
    if profiled_axis is not None:
        profile[2 - profiled_axis] = 0.0
    sigma = np.sqrt(acquisition.psf_mm ** 2 + profile ** 2) / spacing
    ndimage.gaussian_filter(ct, sigma=sigma, output=ct, truncate=3.0)
    if acquisition.sharpen:
        smooth = ndimage.gaussian_filter(ct, sigma=1.0 / spacing, truncate=2.5)
        smooth -= ct
        smooth *= np.float32(-acquisition.sharpen)
        ct += smooth
        del smooth
    screws = [m for m in anatomy.metal if m.name.startswith("screw")]
    if screws:
        _streaks(ct, grid, screws, acquisition.streaks, rng)
    _noise(ct, acquisition, rng)
    ct += np.float32(acquisition.offset)
    if acquisition.circle:
        _reconstruction_circle(ct, grid, anatomy, acquisition.circle)


def _reconstruction_circle(ct: np.ndarray, grid: Grid, anatomy: Anatomy, scale: float) -> None:
    """Pads (-1024) outside the scanner's circular field of reconstruction around the patient."""
    body = anatomy.body
    front, table = body.centre_y - body.half_depth, body.table_y + body.table_thickness
    centre = np.array([body.centre_x, (front + table) / 2])
    radius = scale * max(body.half_width * (1 + body.hip_gain), (table - front) / 2) + 10
    m, o = grid.index_to_physical, np.asarray(grid.origin)[:2] - centre
    i, j = np.arange(grid.size[0], dtype=np.float32), np.arange(grid.size[1], dtype=np.float32)
    step = max(1, _NOISE_SLAB // (ct.shape[1] * ct.shape[2]))
    for k0 in range(0, ct.shape[0], step):
        k = np.arange(k0, min(k0 + step, ct.shape[0]), dtype=np.float32)
        x, y = ((float(m[r, 2]) * k + float(o[r]))[:, None, None] + (float(m[r, 1]) * j)[None, :, None]
                + (float(m[r, 0]) * i)[None, None, :] for r in range(2))
        ct[k0:k0 + len(k)][x * x + y * y > np.float32(radius * radius)] = -1024.0


def _noise(ct: np.ndarray, acquisition: Acquisition, rng: np.random.Generator) -> None:
    sigma = acquisition.noise_sigma
    grain = acquisition.noise_grain
    step = max(1, _NOISE_SLAB // (ct.shape[1] * ct.shape[2]))
    for k in range(0, ct.shape[0], step):
        noise = rng.standard_normal(ct[k:k + step].shape, dtype=np.float32)
        if grain > 0.2:
            ndimage.gaussian_filter(noise, sigma=(0, grain, grain), output=noise)
            # Renormalise: filtering white noise with a Gaussian of sigma s divides its std by ~ 2 s sqrt(pi).
            noise *= np.float32(2 * grain * np.sqrt(np.pi))
        ct[k:k + step] += np.float32(sigma) * noise


def _streaks(ct: np.ndarray, grid: Grid, screws, amplitude: float, rng: np.random.Generator) -> None:
    """Bright/dark rays in the physical axial plane through each screw, and dark bands between screws."""
    centres = np.array([np.mean(np.asarray(s.points), axis=0) for s in screws])
    lo = centres.min(axis=0) - np.array([120.0, 120.0, 12.0])
    hi = centres.max(axis=0) + np.array([120.0, 120.0, 12.0])
    corners = np.array([[(lo, hi)[(c >> a) & 1][a] for a in range(3)] for c in range(8)])
    index = grid.physical_to_index(corners)
    start = np.maximum(np.floor(index.min(axis=0)).astype(int), 0)
    stop = np.minimum(np.ceil(index.max(axis=0)).astype(int) + 1, grid.size)
    if np.any(stop <= start):
        return
    ii, jj, kk = (np.arange(start[a], stop[a], dtype=np.float32) for a in range(3))
    m, o = grid.index_to_physical, np.asarray(grid.origin)
    x, y, z = ((float(m[r, 2]) * kk + float(o[r]))[:, None, None] + (float(m[r, 1]) * jj)[None, :, None]
               + (float(m[r, 0]) * ii)[None, None, :] for r in range(3))
    artefact = np.zeros(x.shape, np.float32)
    for c in centres:
        dx, dy = x - np.float32(c[0]), y - np.float32(c[1])
        r = np.sqrt(dx * dx + dy * dy)
        envelope = np.exp(-r / np.float32(60.0)) * np.exp(-((z - np.float32(c[2])) / np.float32(7.0)) ** 2)
        for _ in range(int(rng.integers(4, 9))):
            phi = rng.uniform(0, np.pi)
            across = -np.float32(np.sin(phi)) * dx + np.float32(np.cos(phi)) * dy
            sign = 1.0 if rng.random() < 0.5 else -1.0
            width = np.float32(rng.uniform(1.0, 3.0))
            artefact += np.float32(sign * amplitude * rng.uniform(0.3, 1.0)) * envelope * np.exp(
                -(across / width) ** 2)
    for a in range(len(centres)):
        for b in range(a + 1, len(centres)):
            p, q = centres[a], centres[b]
            if abs(p[2] - q[2]) > 15:
                continue
            d = (q[:2] - p[:2]).astype(np.float32)
            dx, dy = x - np.float32(p[0]), y - np.float32(p[1])
            t = np.clip((dx * d[0] + dy * d[1]) / np.float32(d @ d), 0, 1)
            dist2 = (dx - t * d[0]) ** 2 + (dy - t * d[1]) ** 2
            height = ((z - np.float32((p[2] + q[2]) / 2)) / np.float32(8.0)) ** 2
            artefact -= np.float32(amplitude * 1.2) * np.exp(-dist2 / np.float32(50.0)) * np.exp(-height)
    ct[start[2]:stop[2], start[1]:stop[1], start[0]:stop[0]] += artefact


# -- random grids ---------------------------------------------------------------------------------
_AXIAL = np.eye(3)
_SAGITTAL = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])   # i = +y, j = -z, k = +x
_CORONAL = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])    # i = +x, j = -z, k = +y


def random_direction(rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """A random acquisition orientation: axial/sagittal/coronal, flips, slight obliquity."""
    plane = rng.choice(["axial", "sagittal", "coronal"], p=[0.75, 0.18, 0.07])
    matrix = {"axial": _AXIAL, "sagittal": _SAGITTAL, "coronal": _CORONAL}[plane].copy()
    if rng.random() < 0.35:        # RAS-like storage (e.g. NIfTI written by many tools)
        matrix[:2] *= -1
    for axis in range(3):
        if rng.random() < 0.12:
            matrix[:, axis] *= -1
    if rng.random() < 0.3:
        matrix = rotation(rng.normal(size=3), np.radians(rng.uniform(1, 12))) @ matrix
    return matrix, str(plane)


def random_grid(anatomy: Anatomy, rng: np.random.Generator, *, spacing_range=(0.5, 5.0),
                max_voxels: int = 1 << 24, kind: str | None = None) -> Grid:
    """A random acquisition grid: FOV kind, anisotropic spacing, orientation; at most ``max_voxels``."""
    if kind is None:
        kind = str(rng.choice(FOV_KINDS, p=[0.35, 0.35, 0.15, 0.15]))
    low, high = spacing_range
    in_plane = float(np.exp(rng.uniform(np.log(low), np.log(min(high, max(low, 1.6))))))
    through = float(np.exp(rng.uniform(np.log(max(low, in_plane * 0.8)), np.log(high))))
    if rng.random() < 0.2:
        through = in_plane
    matrix, _ = random_direction(rng)
    spacing = np.array([in_plane, in_plane, through])
    box = anatomy.fov_box(kind, rng)
    grid = Grid.covering(*box, spacing=spacing, direction=matrix.ravel())
    while grid.voxel_count > max_voxels:
        # Coarsen the finest axes first so that slices stay within the spacing range.
        finer = spacing * 1.15
        spacing = np.where(finer <= high, finer, spacing) if np.any(finer <= high) else finer
        grid = Grid.covering(*box, spacing=spacing, direction=matrix.ravel())
    return grid
