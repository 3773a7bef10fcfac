"""Surface models of the vertebrae (STL / OBJ / VTP) for 3D viewing and surgical planning.

Points are in LPS millimetres on the exact physical geometry of the label map (oblique
direction matrices and flips included), the convention Slicer assumes for model files;
each file also says so (``SPACE=LPS`` in the STL header, the OBJ comment and the VTP field
data), so Slicer loads it in the right place.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from vtkmodules.util.numpy_support import numpy_to_vtk
from vtkmodules.vtkCommonCore import vtkStringArray
from vtkmodules.vtkCommonDataModel import vtkImageData, vtkPolyData
from vtkmodules.vtkCommonTransforms import vtkTransform
from vtkmodules.vtkFiltersCore import (
    vtkPolyDataNormals,
    vtkQuadricDecimation,
    vtkWindowedSincPolyDataFilter,
)
from vtkmodules.vtkFiltersGeneral import vtkDiscreteFlyingEdges3D, vtkTransformFilter
from vtkmodules.vtkIOGeometry import vtkOBJWriter, vtkSTLWriter
from vtkmodules.vtkIOXML import vtkXMLPolyDataWriter

from . import labels as lbl

FORMATS = ("stl", "obj", "vtp")
# Windowed-sinc pass band, as Slicer's closed-surface conversion with smoothing factor 0.5.
PASS_BAND = 0.01


def write_meshes(labels: sitk.Image, outdir: Path, *, fmt: str = "stl", smoothing_iterations: int = 20,
                 decimation: float = 0.5) -> list[Path]:
    """Write one closed surface per present level (L1..L5, L6) as ``outdir/<level>.<fmt>``.

    Surfaces come from discrete flying edges on each level's mask (padded by one voxel so
    they close at the image border), windowed-sinc smoothing and quadric decimation (volume
    preserving), and have outward normals.

    Args:
        labels: label map with VerSe values (L1..L5 = 20..24, L6 = 25).
        outdir: folder to write into (created if missing).
        fmt: ``stl``, ``obj`` or ``vtp``.
        smoothing_iterations: windowed-sinc iterations; 0 switches smoothing off.
        decimation: fraction of triangles to remove (0 keeps all).

    Returns:
        The written files, in level order.
    """
    if fmt not in FORMATS:
        raise ValueError(f"mesh format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if not 0.0 <= decimation < 1.0:
        raise ValueError(f"decimation must be in [0, 1), not {decimation}")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(sitk.Cast(labels, sitk.sitkUInt8) if labels.GetPixelID() != sitk.sitkUInt8 else labels)
    paths = []
    for value in lbl.OUTPUT_VALUES:
        if value not in stats.GetLabels():
            continue
        name = lbl.VERSE_NAMES[value]
        surface = level_surface(labels, value, stats.GetBoundingBox(value),
                                smoothing_iterations=smoothing_iterations, decimation=decimation)
        path = outdir / f"{name}.{fmt}"
        _WRITERS[fmt](surface, path, name)
        paths.append(path)
    return paths


def level_surface(labels: sitk.Image, value: int, bbox: tuple[int, ...], *, smoothing_iterations: int,
                  decimation: float) -> vtkPolyData:
    """Closed, outward-oriented triangle surface of one label value, in LPS millimetres."""
    mask = sitk.RegionOfInterest(labels, list(bbox[3:]), list(bbox[:3])) == value
    mask = sitk.ConstantPad(mask, [1, 1, 1], [1, 1, 1], 0)
    image = vtkImageData()
    image.SetDimensions(mask.GetSize())
    image.SetSpacing(mask.GetSpacing())
    kji = sitk.GetArrayFromImage(mask)
    image.GetPointData().SetScalars(numpy_to_vtk(kji.ravel(), deep=True))

    contour = vtkDiscreteFlyingEdges3D()
    contour.SetInputData(image)
    contour.SetValue(0, 1)
    contour.ComputeNormalsOff()
    contour.ComputeGradientsOff()
    contour.ComputeScalarsOff()
    surface = contour
    if smoothing_iterations > 0:
        smoother = vtkWindowedSincPolyDataFilter()
        smoother.SetInputConnection(surface.GetOutputPort())
        smoother.SetNumberOfIterations(smoothing_iterations)
        smoother.SetPassBand(PASS_BAND)
        smoother.BoundarySmoothingOff()
        smoother.FeatureEdgeSmoothingOff()
        smoother.NonManifoldSmoothingOn()
        smoother.NormalizeCoordinatesOn()
        surface = smoother
    if decimation > 0:
        decimator = vtkQuadricDecimation()
        decimator.SetInputConnection(surface.GetOutputPort())
        decimator.SetTargetReduction(decimation)
        decimator.VolumePreservationOn()
        surface = decimator

    to_lps = vtkTransform()
    to_lps.SetMatrix(_image_to_lps(mask).ravel().tolist())
    transform = vtkTransformFilter()
    transform.SetInputConnection(surface.GetOutputPort())
    transform.SetTransform(to_lps)
    normals = vtkPolyDataNormals()
    normals.SetInputConnection(transform.GetOutputPort())
    normals.ComputePointNormalsOn()
    normals.SplittingOff()
    normals.ConsistencyOn()
    normals.AutoOrientNormalsOff()
    # Flying edges winds triangles outward in the image frame; a grid with a flip
    # (negative determinant) mirrors them inward.
    normals.SetFlipNormals(bool(np.linalg.det(np.array(mask.GetDirection()).reshape(3, 3)) < 0))
    normals.Update()
    return normals.GetOutput()


def _image_to_lps(image: sitk.Image) -> np.ndarray:
    """4x4 matrix from the vtkImageData frame (origin 0, axes along i, j, k, in mm) to LPS."""
    matrix = np.eye(4)
    matrix[:3, :3] = np.array(image.GetDirection()).reshape(3, 3)
    matrix[:3, 3] = image.GetOrigin()
    return matrix


def _write_stl(surface: vtkPolyData, path: Path, name: str) -> None:
    writer = vtkSTLWriter()
    writer.SetInputData(surface)
    writer.SetFileName(str(path))
    writer.SetFileTypeToBinary()
    writer.SetHeader(f"LumbarSeg {name} SPACE=LPS")
    _run(writer, path)


def _write_obj(surface: vtkPolyData, path: Path, name: str) -> None:
    writer = vtkOBJWriter()
    writer.SetInputData(surface)
    writer.SetFileName(str(path))
    _run(writer, path)
    # vtkOBJWriter has no comment option; Slicer reads the coordinate system from the first comment.
    path.write_text(f"# LumbarSeg {name} SPACE=LPS\n" + path.read_text())


def _write_vtp(surface: vtkPolyData, path: Path, name: str) -> None:
    tagged = vtkPolyData()
    tagged.ShallowCopy(surface)
    space = vtkStringArray()
    space.SetName("SPACE")
    space.InsertNextValue("LPS")
    tagged.GetFieldData().AddArray(space)
    writer = vtkXMLPolyDataWriter()
    writer.SetInputData(tagged)
    writer.SetFileName(str(path))
    writer.SetDataModeToAppended()
    writer.SetCompressorTypeToZLib()
    _run(writer, path)


def _run(writer, path: Path) -> None:
    if writer.Write() != 1:
        raise OSError(f"could not write {path}")


_WRITERS = {"stl": _write_stl, "obj": _write_obj, "vtp": _write_vtp}
