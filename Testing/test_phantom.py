"""Tests of the procedural CT phantom (coarse grids, a few seconds in total)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from LumbarSegLib.labels import SACRUM_VALUE
from LumbarSegLib.phantom import VARIANTS, Grid, make_phantom, random_grid, render, sample_anatomy
from LumbarSegLib.phantom.shapes import rotation


def _whole_spine_grid(anatomy, spacing=3.0) -> Grid:
    boxes = [anatomy.level_box(v) for v in anatomy.levels]
    lo = np.min([b[0] for b in boxes], axis=0) - 5
    hi = np.max([b[1] for b in boxes], axis=0) + 5
    return Grid.covering(lo, hi, spacing=spacing)


def _values(image: sitk.Image) -> set[int]:
    return {int(v) for v in np.unique(sitk.GetArrayViewFromImage(image)) if v}


def _hu_at(ct: sitk.Image, point) -> float:
    index = ct.TransformPhysicalPointToIndex(tuple(float(p) for p in point))
    return float(ct.GetPixel(index))


def test_same_seed_same_phantom_and_different_seed_differs():
    a_ct, a_lab, _ = make_phantom(5, kind="lumbar", spacing=(4.0, 4.0, 4.0))
    b_ct, b_lab, _ = make_phantom(5, kind="lumbar", spacing=(4.0, 4.0, 4.0))
    c_ct, _, _ = make_phantom(6, kind="lumbar", spacing=(4.0, 4.0, 4.0))
    assert np.array_equal(sitk.GetArrayViewFromImage(a_ct), sitk.GetArrayViewFromImage(b_ct))
    assert np.array_equal(sitk.GetArrayViewFromImage(a_lab), sitk.GetArrayViewFromImage(b_lab))
    assert sample_anatomy(5) == sample_anatomy(5)
    assert a_ct.GetSize() != c_ct.GetSize() or not np.array_equal(
        sitk.GetArrayViewFromImage(a_ct), sitk.GetArrayViewFromImage(c_ct))


def test_output_types_and_grid():
    ct, labels, anatomy = make_phantom(1, kind="lumbar", spacing=(2.0, 2.0, 2.5))
    assert ct.GetPixelID() == sitk.sitkInt16 and labels.GetPixelID() == sitk.sitkUInt8
    assert Grid.from_image(ct) == Grid.from_image(labels)
    assert ct.GetSpacing() == (2.0, 2.0, 2.5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_renders_its_levels(variant):
    anatomy = sample_anatomy(11, variant=variant)
    _, labels = render(anatomy, _whole_spine_grid(anatomy), realism=False)
    assert _values(labels) == set(anatomy.levels)
    assert (25 in anatomy.levels) == (variant == "L6")
    assert (28 in anatomy.levels) == (variant == "T13")
    assert set(range(20, 25)) <= set(anatomy.levels) and 26 in anatomy.levels
    order = list(anatomy.levels)
    if variant == "T13":
        assert order.index(28) == order.index(19) + 1 == order.index(20) - 1
    if variant == "L6":
        assert order.index(25) == order.index(24) + 1 == order.index(26) - 1


def test_rib_bearing_levels_follow_the_variant():
    for variant, rib_free in (("normal", 19), ("11_ribs", 18)):
        anatomy = sample_anatomy(4, variant=variant)
        ribbed = [v.label for v in anatomy.vertebrae if max(v.ribs) > 0]
        assert ribbed[-1] == rib_free
        assert all(max(v.ribs) == 0 for v in anatomy.vertebrae if 20 <= v.label <= 25)
        rib_levels = {int(b.name.split("_")[1]) for b in anatomy.bones if b.name.startswith("rib_")}
        assert max(rib_levels) == rib_free
    t13 = sample_anatomy(4, variant="T13")
    assert [v.label for v in t13.vertebrae if max(v.ribs) > 0][-1] == 28
    assert any(b.name.startswith("rib_28_") for b in t13.bones)
    for seed in range(15):
        for variant in ("normal", "T13", "L6", "sacralized_L5"):
            last = [v for v in sample_anatomy(seed, variant=variant).vertebrae if max(v.ribs) > 0][-1]
            assert min(last.ribs) >= 40  # never a stump that would make it "L1" by the rib rule


def test_random_variant_mix_is_mostly_normal():
    variants = [sample_anatomy(seed).variant for seed in range(150)]
    assert 0.75 < variants.count("normal") / len(variants) < 0.95
    assert len(set(variants)) == len(VARIANTS)


def test_lumbar_levels_in_cranio_caudal_order_with_plausible_sizes():
    anatomy = sample_anatomy(2, variant="normal")
    grid = Grid.covering(*anatomy.lumbar_box_mm(), spacing=1.5)
    _, labels = render(anatomy, grid, realism=False)
    array = sitk.GetArrayViewFromImage(labels)
    voxel_ml = np.prod(grid.spacing) / 1000
    centroids_z = []
    for value in range(20, 25):
        mask = array == value
        points = np.argwhere(mask)[:, ::-1].astype(float)
        world = np.asarray(grid.origin) + points @ grid.index_to_physical.T
        centroids_z.append(world[:, 2].mean())
        assert 20 < mask.sum() * voxel_ml < 90, value  # cm^3, body + posterior elements
        extent = world.max(axis=0) - world.min(axis=0)
        assert 60 < extent[0] < 120 and 60 < extent[1] < 110, (value, extent)
    assert all(a > b for a, b in zip(centroids_z, centroids_z[1:]))
    widths = [anatomy.vertebra(v).width for v in range(20, 25)]
    assert 34 < widths[0] < 46 and 42 < widths[-1] < 58 and widths[-1] > widths[0]


def test_tissue_intensities_are_realistic():
    anatomy = sample_anatomy(3, variant="normal")
    l3, l4 = anatomy.vertebra(22), anatomy.vertebra(23)
    # A thin slab along the anterior ray, fine enough to resolve a 0.3 mm cortex.
    lo, hi = l3.frame.world_box((-2, -l3.depth / 2 - 5, -2), (2, 2, 2))
    ct, _ = render(anatomy, Grid.covering(lo, hi, spacing=0.2), realism=False)
    cancellous = _hu_at(ct, l3.frame.to_world((0, 0, 0)))
    ray = [l3.frame.to_world((0, -d, 0)) for d in np.arange(0, l3.depth / 2 + 3, 0.1)]
    cortical = max(_hu_at(ct, p) for p in ray)
    bottom = l3.frame.to_world((0, 0, -l3.height / 2))
    top = l4.frame.to_world((0, 0, l4.height / 2))
    disc_grid = Grid.covering(np.minimum(top, bottom) - 5, np.maximum(top, bottom) + 5, spacing=1.0)
    disc_ct, _ = render(anatomy, disc_grid, realism=False)
    disc = _hu_at(disc_ct, (bottom + top) / 2)
    assert cortical > 600 and 0 < cancellous < 450 and cortical > cancellous > disc
    assert 50 < disc < 110
    big = make_phantom(3, kind="abdomen", spacing=(6.0, 6.0, 6.0), realism=False)[0]
    assert float(sitk.GetArrayViewFromImage(big)[0, 0, 0]) == -1000.0


def test_realism_false_is_noiseless_and_realism_true_is_not():
    anatomy = sample_anatomy(8, variant="normal")
    grid = anatomy.field_of_view("abdomen", spacing=6.0)
    exact_a, _ = render(anatomy, grid, realism=False, seed=1)
    exact_b, _ = render(anatomy, grid, realism=False, seed=2)
    noisy, _ = render(anatomy, grid, realism=True, seed=1)
    a, b, n = (sitk.GetArrayViewFromImage(i) for i in (exact_a, exact_b, noisy))
    assert np.array_equal(a, b)
    corner = (slice(0, 3), slice(0, 3), slice(0, 3))
    assert np.all(a[corner] == -1000) and np.std(n[corner]) > 1


def test_labels_agree_across_oblique_flipped_anisotropic_grids():
    anatomy = sample_anatomy(21, variant="normal")
    lo, hi = anatomy.lumbar_box_mm()
    reference = Grid.covering(lo, hi, spacing=1.0)
    direction = (rotation((0.3, -0.5, 1.0), np.radians(9)) @ np.diag([-1.0, -1.0, 1.0]))[:, [1, 0, 2]]
    other = Grid.covering(lo - 5, hi + 5, spacing=(1.5, 1.0, 2.0), direction=direction.ravel())
    _, ref_labels = render(anatomy, reference, realism=False)
    _, other_labels = render(anatomy, other, realism=False)
    resampled = sitk.Resample(other_labels, ref_labels, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    a, b = sitk.GetArrayViewFromImage(ref_labels), sitk.GetArrayViewFromImage(resampled)
    for value in range(20, 25):
        dice = 2 * np.sum((a == value) & (b == value)) / (np.sum(a == value) + np.sum(b == value))
        assert dice > 0.9, (value, dice)


def test_patient_axes_follow_lps():
    anatomy = sample_anatomy(9, variant="normal")
    l3 = anatomy.vertebra(22)
    axes = l3.frame.matrix
    assert axes[0, 0] > 0.9 and axes[1, 1] > 0.9 and axes[2, 2] > 0.9   # u = left, v = posterior, w = superior
    assert anatomy.centre(20)[2] > anatomy.centre(24)[2] > anatomy.centre(26)[2]
    liver = next(s for s in anatomy.soft if s.name == "liver")
    assert liver.frame.origin[0] < l3.frame.origin[0]            # liver on the patient's right (-x)
    assert anatomy.body.back_y > l3.frame.origin[1] > anatomy.body.centre_y - anatomy.body.half_depth


@pytest.mark.parametrize("kind", ["abdomen", "lumbar", "partial", "thoracolumbar"])
def test_fields_of_view(kind):
    anatomy = sample_anatomy(13, variant="normal")
    grid = anatomy.field_of_view(kind, spacing=(4.0, 4.0, 4.0), rng=np.random.default_rng(0))
    _, labels = render(anatomy, grid, realism=False)
    present = _values(labels)
    width = grid.size[0] * grid.spacing[0]
    if kind == "abdomen":
        assert set(range(20, 25)) | {26} <= present and 330 <= width <= 520
    elif kind == "lumbar":
        assert set(range(20, 25)) <= present and 90 <= width <= 160
    elif kind == "thoracolumbar":
        assert {15, 16, 17, 18, 19, 20, 21} <= present
    else:
        ranks = sorted(anatomy.levels.index(v) for v in present)
        assert 1 <= len(ranks) <= 8 and ranks == list(range(ranks[0], ranks[-1] + 1))


def test_random_grid_is_bounded_and_varied():
    anatomy = sample_anatomy(14)
    rng = np.random.default_rng(3)
    grids = [random_grid(anatomy, rng, max_voxels=2_000_000) for _ in range(30)]
    assert all(g.voxel_count <= 2_000_000 for g in grids)
    assert all(min(g.spacing) >= 0.5 for g in grids)
    directions = {tuple(np.round(g.direction, 3)) for g in grids}
    assert len(directions) > 3
    assert any(max(g.spacing) / min(g.spacing) > 1.5 for g in grids)
    for g in grids:
        assert abs(abs(np.linalg.det(g.matrix)) - 1) < 1e-6


def test_grid_roundtrip_through_simpleitk():
    grid = Grid(size=(5, 6, 7), spacing=(0.7, 0.8, 2.0), origin=(1.0, -2.0, 3.0),
                direction=tuple(np.diag([-1.0, -1.0, 1.0]).ravel()))
    assert Grid.from_image(grid.reference_image()) == grid
    image = grid.reference_image()
    point = image.TransformIndexToPhysicalPoint((2, 3, 4))
    assert np.allclose(grid.physical_to_index(np.array([point]))[0], (2, 3, 4))


def test_screws_are_metal_and_fracture_lowers_height():
    def screws(anatomy):
        return [m for m in anatomy.metal if m.name.startswith("screw")]

    screwed = next(a for a in map(sample_anatomy, range(400)) if screws(a))
    screw = screws(screwed)[0]
    grid = Grid.covering(np.min(screw.points, axis=0) - 10, np.max(screw.points, axis=0) + 10, spacing=1.0)
    ct, _ = render(screwed, grid, realism=False)
    assert sitk.GetArrayViewFromImage(ct).max() >= 2500
    fractured = next(a for a in map(sample_anatomy, range(400)) if a.fracture_level)
    assert fractured.vertebra(fractured.fracture_level).wedge > 0


def test_phantom_is_identical_in_another_process():
    code = ("import hashlib, SimpleITK as sitk; from LumbarSegLib.phantom import make_phantom; "
            "ct, lab, _ = make_phantom(3, kind='lumbar', spacing=(5.0, 5.0, 5.0)); "
            "print(hashlib.md5(sitk.GetArrayViewFromImage(ct).tobytes()).hexdigest())")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONHASHSEED": "12345"}
    other = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    ct, _, _ = make_phantom(3, kind="lumbar", spacing=(5.0, 5.0, 5.0))
    assert other.stdout.strip() == hashlib.md5(sitk.GetArrayViewFromImage(ct).tobytes()).hexdigest()


def test_labels_do_not_depend_on_realism_even_for_thick_slices():
    anatomy = sample_anatomy(17, variant="normal")
    grid = anatomy.field_of_view("lumbar", spacing=(1.0, 1.0, 4.0))
    noisy_ct, noisy = render(anatomy, grid, realism=True)
    _, exact = render(anatomy, grid, realism=False)
    assert np.array_equal(sitk.GetArrayViewFromImage(noisy), sitk.GetArrayViewFromImage(exact))
    assert Grid.from_image(noisy_ct) == grid


def _lumbar_grid(anatomy, spacing) -> Grid:
    lo, hi = anatomy.level_box(22)
    return Grid.covering(np.asarray(lo) - 4, np.asarray(hi) + 4, spacing=spacing)


def test_labels_reach_half_a_voxel_past_the_bone_surface():
    """Coarse labels hold the fine ones at the shared centres, plus a halo within the coarse reach (1.2 mm)."""
    anatomy = sample_anatomy(21, variant="normal")
    coarse = _lumbar_grid(anatomy, 2.4)
    fine = Grid(size=tuple(3 * n - 2 for n in coarse.size), spacing=(0.8,) * 3, origin=coarse.origin)
    _, coarse_labels = render(anatomy, coarse, realism=False)
    _, fine_labels = render(anatomy, fine, realism=False)
    labelled = sitk.GetArrayViewFromImage(coarse_labels) > 0
    fine_labelled = sitk.GetArrayViewFromImage(fine_labels) > 0
    at_centres = fine_labelled[::3, ::3, ::3]
    halo = labelled & ~at_centres
    assert not np.any(at_centres & ~labelled)
    assert halo.sum() > 0.1 * at_centres.sum()
    within_reach = ndimage.binary_dilation(fine_labelled, iterations=2)[::3, ::3, ::3]
    interior = (slice(1, -1),) * 3  # bone just outside the grid reaches its border voxels
    # A few tips of thin processes, whose distance fields are not exactly Euclidean, reach further.
    assert np.mean(~within_reach[interior][halo[interior]]) < 0.05


def test_thick_slice_labels_cover_every_sub_slice():
    """A thick voxel is labelled when the bone reaches any part of its slab, not only its centre."""
    anatomy = sample_anatomy(22, variant="normal")
    thin = _lumbar_grid(anatomy, 1.2)
    size = (thin.size[0], thin.size[1], thin.size[2] // 3)
    shift = np.asarray(thin.matrix[:, 2]) * 1.2
    thick = Grid(size=size, spacing=(1.2, 1.2, 3.6), origin=tuple(np.asarray(thin.origin) + shift),
                 direction=thin.direction)
    _, thin_labels = render(anatomy, thin, realism=False)
    _, thick_labels = render(anatomy, thick, realism=False)
    slabs = sitk.GetArrayViewFromImage(thin_labels)[: 3 * size[2]].reshape(size[2], 3, size[1], size[0])
    assert np.array_equal(sitk.GetArrayViewFromImage(thick_labels) > 0, slabs.max(axis=1) > 0)


def _sacrum_midline(anatomy, height_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """S1's midline at ``height_mm`` above its centre, front to back in 0.5 mm steps.

    Returns:
        the local posterior coordinate v (mm, 0 at the body's centre) of each
        sample and whether the sample is labelled sacrum.
    """
    s1 = anatomy.sacrum[0]
    v = -s1.depth / 2 - 5.0 + 0.5 * np.arange(200)
    start = s1.frame.to_world((0.0, v[0], height_mm))
    grid = Grid(size=(1, v.size, 1), spacing=(0.5, 0.5, 0.5), origin=tuple(start), direction=tuple(s1.frame.axes))
    _, labels = render(anatomy, grid, realism=False)
    return v, sitk.GetArrayViewFromImage(labels)[0, :, 0] == SACRUM_VALUE


@pytest.mark.parametrize("seed", [2, 9])
def test_s1_has_a_canal_and_its_laminae_start_below_the_endplate(seed):
    anatomy = sample_anatomy(seed, variant="normal")
    s1 = anatomy.sacrum[0]
    v, middle = _sacrum_midline(anatomy, 0.0)
    edges = np.flatnonzero(np.diff(middle.astype(int)))  # body start, body end, wall start, wall end
    assert len(edges) >= 4
    assert v[edges[2]] - v[edges[1]] >= 8.0, "the canal separates the body from the dorsal wall"
    v, near_top = _sacrum_midline(anatomy, s1.height / 2 - 2.0)
    assert near_top.any() and not near_top[v > s1.depth / 2 + 2.0].any(), "no lamina at the level of the S1 endplate"
