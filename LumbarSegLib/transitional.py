"""Stage 5b: signs of transitional anatomy at the two ends of the lumbar spine.

A lumbar field of view cannot count the vertebrae from C2, so the labels count
up from the sacrum and are checked at both ends. Two signs put the level count
in doubt; they are reported, never acted on:

- the vertebra above L1 bears no rib: 11 rib pairs, or six lumbar-type
  vertebrae of which the network called the top one thoracic;
- a dysplastic L5 transverse process, high and long (Castellvi type I and
  above): a lumbosacral transitional vertebra, e.g. a sacralized L5.

Ribs are not labelled: a rib is unlabelled bone, no thicker than a rib, whose
head touches the vertebra beside its body and that runs at least ``MIN_RIB_MM``
from there, sideways. Shorter stumps count as no rib (the convention "L1 is the
first vertebra without ribs or with stumps under 4 cm"; our straight-line
length is a little shorter than a rib's length along its curve). The absence
is only reported where the crop and the scan show the whole vertebra above L1
and the space beside it.

Not detected: a 13th rib-bearing vertebra with five lumbar vertebrae below it
(T13) looks like a normal junction from the lumbar spine. A rib on L1 was
tried and is not reported: the 12th rib runs down past L1's transverse process
and was taken for L1's own on normal phantoms.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from LumbarSegLib.labels import NETWORK_CLASSES
from LumbarSegLib.postprocess import BONE_HU, THORACIC_CLASS, Finding, body_part

# Findings of transitional anatomy (these and the L6 checks of ``postprocess``): the level
# count, and so every label, may be in doubt.
TRANSITIONAL_FINDINGS = ("transitional_anatomy", "level_spans_two_vertebrae", "rib_free_thoracic",
                         "lumbosacral_transitional_vertebra")
L1_CLASS = NETWORK_CLASSES.index("L1")
L5_CLASS = NETWORK_CLASSES.index("L5")
# Territory label of the vertebra above L1 (apart from the rest of the thoracic class).
ABOVE_L1 = len(NETWORK_CLASSES)
CUBE = np.ones((3, 3, 3), dtype=bool)
MIN_RIB_MM = 33.0
# A rib is a tube ~10 mm thick: enhanced kidneys and vessels beside the spine, as dense
# as a rib at 2 mm (~150-250 HU), are far thicker.
MAX_RIB_RADIUS_MM = 7.0
# A rib leaves its vertebra sideways; calcified aortic wall or an osteophyte touching
# the vertebra runs mostly cranio-caudally.
MIN_RIB_LATERAL_MM = 20.0
CONTACT_MM = 6.0
# The region a rib of at least MIN_RIB_MM occupies, beside the vertebra's centre: a
# rib's absence is only reported where the scan covers it on both sides.
RIB_REACH_MM = 65.0
# The vertebra above L1 is judged only when the crop and the scan show all of it and
# the network labelled at least this share of an L1's volume thoracic.
MIN_ABOVE_SHARE = 0.5
ABOVE_HEIGHT_FACTOR = 0.6
# Coronal area of an L5 transverse process beyond which it is dysplastic: a Castellvi
# type I process is at least 19 mm high; 19 mm over ~21 mm of its length is 400 mm².
# Measured on network labels (docs/MODEL_CARD.md): normal L5 up to 316 mm², sacralized
# L5 464 mm² and more.
DYSPLASTIC_TP_AREA_MM2 = 400.0
# Transverse processes lie lateral to the vertebral body by at least this much.
TP_MARGIN_MM = 4.0
# A rib head lies beside the vertebral body (its costovertebral joint) and meets it over
# a joint surface of ~1 cm²: bone near the vertebra over less (2-3 voxels at 2 mm) is a rib of
# the vertebra above passing by on its way down, or noise.
RIB_HEAD_MM = 8.0
MIN_HEAD_CONTACT_MM3 = 48.0


def transitional_findings(labels: np.ndarray, hu: np.ndarray, covered: np.ndarray, *,
                          spacing_mm: float) -> list[Finding]:
    """Rib and transverse-process signs of transitional anatomy on the canonical crop grid.

    Args:
        labels: network classes (z, y, x); axis 0 runs inferior to superior, axis 1
            anterior to posterior, axis 2 right to left.
        hu: the CT in HU on the same grid.
        covered: which voxels lie inside the scan.
        spacing_mm: isotropic spacing of the grid.
    """
    return junction_rib_findings(labels, hu, covered, spacing_mm=spacing_mm) + \
        sacralization_findings(labels, spacing_mm=spacing_mm)


def junction_rib_findings(labels: np.ndarray, hu: np.ndarray, covered: np.ndarray, *,
                          spacing_mm: float) -> list[Finding]:
    """A finding when the vertebra above L1 bears no rib (judged only where the view shows it)."""
    l1 = labels == L1_CLASS
    if not l1.any():
        return []
    above = vertebra_above(l1, labels, covered)
    if above is None or not sides_covered(above, covered, spacing_mm=spacing_mm):
        return []
    # Its ribs lie within a rib's length of it: the work is done on that slab of rows.
    rows = np.nonzero(above.any(axis=(1, 2)))[0]
    reach = int(np.ceil(RIB_REACH_MM / spacing_mm))
    slab = slice(max(rows[0] - reach, 0), rows[-1] + reach + 1)
    vertebrae = labels[slab].astype(np.int16)
    vertebrae[above[slab]] = ABOVE_L1
    bone = unlabelled_bone(labels[slab], hu[slab]) & (nearest_vertebra(vertebrae) == ABOVE_L1)
    if max(rib_lengths(above[slab], bone, spacing_mm=spacing_mm)) >= MIN_RIB_MM:
        return []
    return [Finding(
        "rib_free_thoracic",
        "the vertebra above L1 bears no rib: 11 rib pairs, or a sixth lumbar vertebra taken for T12;"
        " confirm the level count (from C2)",
        "L1",
    )]


def unlabelled_bone(labels: np.ndarray, hu: np.ndarray) -> np.ndarray:
    """Bone outside every label and its one-voxel rim.

    The rim is the partial-volume halo of the labelled cortex, which would join
    every vertebra to every rib.
    """
    rim = ndimage.binary_dilation(labels > 0, structure=CUBE)
    return (hu > BONE_HU) & ~rim


def nearest_vertebra(vertebrae: np.ndarray) -> np.ndarray:
    """Per voxel, the label of the nearest labelled voxel: each vertebra's territory."""
    indices = ndimage.distance_transform_edt(vertebrae == 0, return_distances=False, return_indices=True)
    return vertebrae[tuple(indices)]


def vertebra_above(l1: np.ndarray, labels: np.ndarray, covered: np.ndarray) -> np.ndarray | None:
    """The thoracic voxels above L1's centre within ``ABOVE_HEIGHT_FACTOR`` L1 heights of it.

    L1's height includes its processes (~60 mm), so that is the vertebra above L1
    (T12, usually) without the one above it.

    None when the crop or the scan ends less than ``ABOVE_HEIGHT_FACTOR`` L1
    heights above L1's top, or the network labelled too little of it thoracic.
    """
    z, y, x = np.nonzero(l1)
    height = z.max() - z.min() + 1
    needed_top = z.max() + int(np.ceil(ABOVE_HEIGHT_FACTOR * height))
    centre = (int(round(y.mean())), int(round(x.mean())))
    if needed_top >= labels.shape[0] or not covered[needed_top][centre]:
        return None
    centre_row = int(round(z.mean()))
    above = np.zeros_like(l1)
    above[centre_row:] = (labels[centre_row:] == THORACIC_CLASS) & (
        ndimage.distance_transform_edt(~l1[centre_row:]) <= ABOVE_HEIGHT_FACTOR * height)
    return above if above.sum() >= MIN_ABOVE_SHARE * l1.sum() else None


def sides_covered(vertebra: np.ndarray, covered: np.ndarray, *, spacing_mm: float) -> bool:
    """Whether the scan covers ``RIB_REACH_MM`` to both sides of the vertebra, over its height."""
    rows = np.nonzero(vertebra.any(axis=(1, 2)))[0]
    columns = np.nonzero(vertebra.any(axis=(0, 1)))[0]
    centre = int(round(columns.mean()))
    reach = int(round(RIB_REACH_MM / spacing_mm))
    if centre - reach < 0 or centre + reach >= vertebra.shape[2]:
        return False
    band = covered[rows[0]:rows[-1] + 1][:, vertebra.any(axis=(0, 2))]
    return bool(band[..., centre - reach].all() and band[..., centre + reach].all())


def rib_lengths(vertebra: np.ndarray, bone: np.ndarray, *, spacing_mm: float) -> tuple[float, float]:
    """Length (mm) of the longest rib on each side (right, left) of ``vertebra``; 0 where none.

    ``bone`` is the unlabelled bone in the vertebra's territory. A rib is a
    component of it no thicker than a rib whose head touches the vertebra
    ``beside_body`` over at least ``MIN_HEAD_CONTACT_MM3``; its length is the greatest distance of its voxels from the
    head, and its far end lies ``MIN_RIB_LATERAL_MM`` or more to the side.
    """
    components, _ = ndimage.label(bone, structure=CUBE)
    boxes = ndimage.find_objects(components)
    near = ndimage.binary_dilation(vertebra, iterations=int(np.ceil(CONTACT_MM / spacing_mm)))
    near &= beside_body(vertebra, spacing_mm=spacing_mm)
    first, last = body_columns(vertebra)
    centre_x = (first + last) / 2
    lengths = [0.0, 0.0]
    for component in np.unique(components[near & (components > 0)]):
        box = boxes[component - 1]
        piece = components[box] == component
        if thickest_radius_mm(piece, spacing_mm=spacing_mm) > MAX_RIB_RADIUS_MM:
            continue
        offset = np.array([axis.start for axis in box])
        touching = np.argwhere(piece & near[box]) + offset
        if len(touching) * spacing_mm**3 < MIN_HEAD_CONTACT_MM3:
            continue
        head = touching.mean(axis=0)
        voxels = np.argwhere(piece) + offset
        distance = np.linalg.norm(voxels - head, axis=1) * spacing_mm
        far = voxels[np.argmax(distance)]
        if abs(far[2] - head[2]) * spacing_mm < MIN_RIB_LATERAL_MM:
            continue
        side = int(far[2] > centre_x)
        lengths[side] = max(lengths[side], float(distance.max()))
    return lengths[0], lengths[1]


def beside_body(vertebra: np.ndarray, *, spacing_mm: float) -> np.ndarray:
    """Where a rib head can touch the vertebra: within ``RIB_HEAD_MM`` of the body's sides, at its level and depth.

    The head articulates with the posterolateral body; further back, a rib of
    the vertebra above may pass the transverse process on its way down.
    """
    body = body_part(vertebra)
    margin = int(np.ceil(RIB_HEAD_MM / spacing_mm))
    (z0, z1), (y0, y1), (x0, x1) = [
        (int(i[0]), int(i[-1])) for i in (np.nonzero(body.any(axis=axes))[0] for axes in ((1, 2), (0, 2), (0, 1)))
    ]
    zone = np.zeros_like(vertebra)
    levels, depths = slice(max(z0 - margin, 0), z1 + margin + 1), slice(y0, y1 + margin + 1)
    for side in (x0, x1):
        zone[levels, depths, max(side - margin, 0):side + margin + 1] = True
    return zone


def thickest_radius_mm(piece: np.ndarray, *, spacing_mm: float) -> float:
    """Radius (mm) of the largest ball inside ``piece``."""
    return float(ndimage.distance_transform_edt(np.pad(piece, 1)).max() * spacing_mm)


def body_columns(vertebra: np.ndarray) -> tuple[int, int]:
    """First and last left-right column of the vertebral body (``postprocess.body_part``)."""
    columns = np.nonzero(body_part(vertebra).any(axis=(0, 1)))[0]
    return int(columns[0]), int(columns[-1])


def transverse_process_areas(vertebra: np.ndarray, *, spacing_mm: float) -> tuple[float, float]:
    """Area (mm²) of the vertebra lateral to its body, on each side (right, left), seen from the front.

    Beyond ``TP_MARGIN_MM`` from the body's sides, a lumbar vertebra is its
    transverse processes; their coronal area grows with their cranio-caudal
    height (Castellvi's criterion) and their length.
    """
    first, last = body_columns(vertebra)
    margin = int(np.ceil(TP_MARGIN_MM / spacing_mm))
    coronal = vertebra.any(axis=1)
    pixel = spacing_mm**2
    return (float(coronal[:, :max(first - margin, 0)].sum() * pixel),
            float(coronal[:, last + margin + 1:].sum() * pixel))


def sacralization_findings(labels: np.ndarray, *, spacing_mm: float) -> list[Finding]:
    """A finding when an L5 transverse process is dysplastic (large): a lumbosacral transitional vertebra."""
    l5 = labels == L5_CLASS
    if not l5.any():
        return []
    area = max(transverse_process_areas(l5, spacing_mm=spacing_mm))
    if area < DYSPLASTIC_TP_AREA_MM2:
        return []
    return [Finding(
        "lumbosacral_transitional_vertebra",
        f"an L5 transverse process is dysplastic ({area:.0f} mm² seen from the front; a normal one is under"
        f" {DYSPLASTIC_TP_AREA_MM2:.0f} mm²): a sacralized L5 or another lumbosacral transitional vertebra"
        " (Castellvi type I or above); confirm the level count",
        "L5",
    )]
