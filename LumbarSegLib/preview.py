"""Quick-look PNG: sagittal, coronal and axial CT slices through the lumbar spine with the labels.

Each view is resampled from the physical images onto an axis-aligned plane with square
pixels, so oblique or anisotropic inputs are shown undistorted, in radiological
convention: axial seen from the feet and coronal from the front (patient right on the image
left), sagittal with anterior on the left; superior and anterior up.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from . import labels as lbl

BONE_WINDOW = (-500.0, 1300.0)  # level 400, width 1800 HU
MARGIN_MM = 50.0
MAX_PIXELS = 500
ALPHA = 0.45
X, Y, Z = np.eye(3)  # LPS axes: patient left, posterior, superior
# (title, image column axis, image row axis, plane normal, letters left/right/top/bottom)
VIEWS = (
    ("Sagittal", Y, -Z, X, "APSI"),
    ("Coronal", X, -Z, Y, "RLSI"),
    ("Axial", X, Y, Z, "RLAP"),
)


def write_preview(ct: sitk.Image, labels: sitk.Image, path: Path) -> None:
    """Write the three-view overlay PNG.

    The views cross at the centroid of the lumbar labels and show their bounding box plus
    ``MARGIN_MM`` (the whole image when no lumbar label is present); CT in a bone window,
    labels in ``labels.COLORS`` with a legend.

    Args:
        ct: CT in HU.
        labels: label map with VerSe values, in the same physical space as ``ct``.
        path: PNG file to write (written exactly there).
    """
    values, centre, low, high = _region(labels)
    ct_low, ct_high = _physical_box(ct)
    low, high = np.maximum(low, ct_low), np.minimum(high, ct_high)
    pixel_mm = max(min(ct.GetSpacing()), float((high - low).max()) / MAX_PIXELS)
    slices = [(title, *_slice_pair(ct, labels, centre, low, high, pixel_mm, cols, rows, normal), letters)
              for title, cols, rows, normal, letters in VIEWS]

    widths = [hu.shape[1] / hu.shape[0] for _, hu, _, _ in slices]
    figure = Figure(figsize=(1.0 + 5.0 * sum(widths), 6.0), dpi=100, facecolor="black")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 3, gridspec_kw={"width_ratios": widths})
    for ax, (title, hu, lab, letters) in zip(axes, slices):
        _draw(ax, title, hu, lab, letters)
    names = [lbl.VERSE_NAMES[v] for v in values]
    handles = [Patch(facecolor=lbl.COLORS[n], label=n) for n in names] or [Patch(color="none", label="no lumbar label")]
    figure.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, labelcolor="white")
    figure.subplots_adjust(left=0.01, right=0.99, top=0.93, bottom=0.09, wspace=0.03)
    figure.savefig(path, format="png", facecolor="black")


def _region(labels: sitk.Image) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray]:
    """Lumbar values present, their centroid and LPS bounding box plus margin (or the image's)."""
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(sitk.Cast(labels, sitk.sitkUInt8) if labels.GetPixelID() != sitk.sitkUInt8 else labels)
    values = [v for v in lbl.OUTPUT_VALUES if v in stats.GetLabels()]
    if not values:
        low, high = _physical_box(labels)
        return values, (low + high) / 2.0, low, high
    counts = np.array([stats.GetNumberOfPixels(v) for v in values], float)
    centroid = (np.array([stats.GetCentroid(v) for v in values]) * counts[:, None]).sum(axis=0) / counts.sum()
    corners = np.concatenate([_index_box_corners(labels, stats.GetBoundingBox(v)) for v in values])
    return values, centroid, corners.min(axis=0) - MARGIN_MM, corners.max(axis=0) + MARGIN_MM


def _index_box_corners(image: sitk.Image, bbox: tuple[int, ...]) -> np.ndarray:
    """LPS corners of an index box (outer voxel faces)."""
    start, size = np.array(bbox[:3]) - 0.5, np.array(bbox[3:])
    corners = [start + size * np.array(c) for c in np.ndindex(2, 2, 2)]
    return np.array([image.TransformContinuousIndexToPhysicalPoint(c.tolist()) for c in corners])


def _physical_box(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    corners = _index_box_corners(image, (0, 0, 0, *image.GetSize()))
    return corners.min(axis=0), corners.max(axis=0)


def _slice_pair(ct: sitk.Image, labels: sitk.Image, centre: np.ndarray, low: np.ndarray, high: np.ndarray,
                pixel_mm: float, cols: np.ndarray, rows: np.ndarray, normal: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """CT and labels on one plane through ``centre`` spanning the box [low, high]."""
    extent = high - low
    size = [max(1, int(round(abs(cols @ extent) / pixel_mm))), max(1, int(round(abs(rows @ extent) / pixel_mm))), 1]
    # The plane's first pixel sits at the box corner where both image axes start.
    start = np.where(cols + rows < 0, high, low)
    origin = start * (cols != 0) + start * (rows != 0) + centre * (normal != 0)
    plane = sitk.Image(size, sitk.sitkUInt8)
    plane.SetSpacing([pixel_mm] * 3)
    plane.SetOrigin((origin + (cols + rows) * pixel_mm / 2.0).tolist())
    plane.SetDirection(np.column_stack([cols, rows, normal]).ravel().tolist())
    hu = sitk.Resample(ct, plane, sitk.Transform(), sitk.sitkLinear, BONE_WINDOW[0] - 1000.0, sitk.sitkFloat32)
    lab = sitk.Resample(labels, plane, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return sitk.GetArrayFromImage(hu)[0], sitk.GetArrayFromImage(lab)[0]


def _draw(ax, title: str, hu: np.ndarray, lab: np.ndarray, letters: str) -> None:
    ax.imshow(hu, cmap="gray", vmin=BONE_WINDOW[0], vmax=BONE_WINDOW[1], interpolation="bilinear")
    overlay = np.zeros(lab.shape + (4,))
    for value in lbl.OUTPUT_VALUES:
        overlay[lab == value] = (*lbl.COLORS[lbl.VERSE_NAMES[value]], ALPHA)
    ax.imshow(overlay, interpolation="nearest")
    ax.set_title(title, color="white")
    style = {"color": "yellow", "fontsize": 11, "fontweight": "bold", "transform": ax.transAxes}
    ax.text(0.01, 0.5, letters[0], ha="left", va="center", **style)
    ax.text(0.99, 0.5, letters[1], ha="right", va="center", **style)
    ax.text(0.5, 0.99, letters[2], ha="center", va="top", **style)
    ax.text(0.5, 0.01, letters[3], ha="center", va="bottom", **style)
    ax.set_axis_off()
