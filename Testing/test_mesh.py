"""Vertebra surface files: closed, outward, in LPS on oblique / flipped / anisotropic grids."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.transform import Rotation
from vtkmodules.util.numpy_support import vtk_to_numpy
from vtkmodules.vtkFiltersCore import vtkFeatureEdges, vtkMassProperties
from vtkmodules.vtkIOGeometry import vtkOBJReader, vtkSTLReader
from vtkmodules.vtkIOXML import vtkXMLPolyDataReader

from LumbarSegLib.mesh import write_meshes

OBLIQUE = Rotation.from_euler("zyx", [25, -10, 15], degrees=True).as_matrix()
GRIDS = {
    "oblique_anisotropic": (OBLIQUE, (0.7, 0.9, 1.6)),
    "oblique_flipped": (OBLIQUE @ np.diag([1.0, -1.0, 1.0]), (0.8, 0.6, 1.5)),
}
READERS = {"stl": vtkSTLReader, "obj": vtkOBJReader, "vtp": vtkXMLPolyDataReader}
CENTRE_LPS = np.array([12.3, -40.0, 250.0])
RADIUS = 10.0


def sphere_labels(direction: np.ndarray, spacing, value: int = 22) -> sitk.Image:
    size = [int(np.ceil(2 * RADIUS / s)) + 8 for s in spacing]
    index_to_lps = direction @ np.diag(spacing)
    origin = CENTRE_LPS - index_to_lps @ ((np.array(size) - 1) / 2.0 + 0.3)  # centre off the voxel grid
    k, j, i = np.meshgrid(*[np.arange(n) for n in size[::-1]], indexing="ij")
    lps = np.stack([i, j, k], axis=-1) @ index_to_lps.T + origin
    inside = np.linalg.norm(lps - CENTRE_LPS, axis=-1) <= RADIUS
    image = sitk.GetImageFromArray(np.where(inside, value, 0).astype(np.uint8))
    image.SetSpacing(spacing)
    image.SetOrigin(origin.tolist())
    image.SetDirection(direction.ravel().tolist())
    return image


def read(path):
    reader = READERS[path.suffix[1:]]()
    reader.SetFileName(str(path))
    reader.Update()
    return reader


def triangles(surface) -> tuple[np.ndarray, np.ndarray]:
    points = vtk_to_numpy(surface.GetPoints().GetData()).astype(float)
    cells = vtk_to_numpy(surface.GetPolys().GetConnectivityArray()).reshape(-1, 3)
    return points, cells


def signed_volume_and_centroid(surface) -> tuple[float, np.ndarray]:
    """Volume and centroid of the solid bounded by a closed surface (signed tetrahedra from the origin)."""
    points, cells = triangles(surface)
    a, b, c = points[cells[:, 0]], points[cells[:, 1]], points[cells[:, 2]]
    volumes = np.einsum("ij,ij->i", a, np.cross(b, c)) / 6.0
    return volumes.sum(), (volumes[:, None] * (a + b + c) / 4.0).sum(axis=0) / volumes.sum()


def open_edge_count(surface) -> int:
    edges = vtkFeatureEdges()
    edges.SetInputData(surface)
    edges.BoundaryEdgesOn()
    edges.NonManifoldEdgesOn()
    edges.FeatureEdgesOff()
    edges.ManifoldEdgesOff()
    edges.Update()
    return edges.GetOutput().GetNumberOfCells()


@pytest.mark.parametrize("fmt", ["stl", "obj", "vtp"])
@pytest.mark.parametrize("grid", GRIDS)
def test_sphere_position_volume_orientation(tmp_path, grid, fmt):
    direction, spacing = GRIDS[grid]
    paths = write_meshes(sphere_labels(direction, spacing), tmp_path / "meshes", fmt=fmt)
    assert paths == [tmp_path / "meshes" / f"L3.{fmt}"]
    surface = read(paths[0]).GetOutput()

    assert surface.GetNumberOfCells() > 100
    assert open_edge_count(surface) == 0
    volume, centroid = signed_volume_and_centroid(surface)
    analytic = 4.0 / 3.0 * np.pi * RADIUS**3
    assert volume > 0  # outward winding
    mass = vtkMassProperties()
    mass.SetInputData(surface)
    assert mass.GetVolume() == pytest.approx(analytic, rel=0.05)
    assert volume == pytest.approx(analytic, rel=0.05)
    assert np.linalg.norm(centroid - CENTRE_LPS) < 0.5 * min(spacing)
    points, _ = triangles(surface)
    radii = np.linalg.norm(points - CENTRE_LPS, axis=1)
    assert np.all(np.abs(radii - RADIUS) < max(spacing))


def test_space_tag_and_normals(tmp_path):
    labels = sphere_labels(OBLIQUE @ np.diag([1.0, -1.0, 1.0]), (0.8, 0.6, 1.5))
    stl, = write_meshes(labels, tmp_path, fmt="stl")
    obj, = write_meshes(labels, tmp_path, fmt="obj")
    vtp, = write_meshes(labels, tmp_path, fmt="vtp")
    assert "SPACE=LPS" in read(stl).GetHeader()
    assert "SPACE=LPS" in read(obj).GetComment()
    surface = read(vtp).GetOutput()
    assert surface.GetFieldData().GetAbstractArray("SPACE").GetValue(0) == "LPS"
    normals = vtk_to_numpy(surface.GetPointData().GetNormals())
    points, _ = triangles(surface)
    outward = np.einsum("ij,ij->i", normals, points - CENTRE_LPS)
    assert np.all(outward > 0)


def test_one_file_per_level_and_options(tmp_path):
    kji = np.zeros((40, 20, 20), np.uint8)
    kji[2:10, 4:16, 4:16] = 20
    kji[12:20, 4:16, 4:16] = 21
    kji[22:30, 4:16, 4:16] = 25
    kji[32:38, 0:20, 4:16] = 26  # sacrum: not written; touches the image border
    kji[34:40, 4:16, 4:16] = 24  # touches the image border: still closed
    labels = sitk.GetImageFromArray(kji)
    labels.SetSpacing((1.0, 1.0, 2.0))
    paths = write_meshes(labels, tmp_path, fmt="vtp", smoothing_iterations=0, decimation=0.0)
    assert [p.name for p in paths] == ["L1.vtp", "L2.vtp", "L5.vtp", "L6.vtp"]
    for path in paths:
        surface = read(path).GetOutput()
        assert open_edge_count(surface) == 0
    # Without smoothing or decimation the surface is the exact half-voxel iso-surface of the box.
    volume, centroid = signed_volume_and_centroid(read(paths[0]).GetOutput())
    assert centroid == pytest.approx([9.5, 9.5, 11.0])
    assert volume == pytest.approx(12 * 12 * 16, rel=0.05)
    with pytest.raises(ValueError):
        write_meshes(labels, tmp_path, fmt="ply")
