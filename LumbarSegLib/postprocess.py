"""Stage 5: clean the class probabilities and check them against anatomy.

Cleaning edits the probabilities themselves (not only the argmax), so the
restoration to the input grid, which interpolates probabilities, carries the
cleaned result:

- a vertebra the network labelled with a mixture of two adjacent levels (it
  could not tell L5 from L6, say) gets one of them: the pair's region is
  split between the vertebral bodies it covers, each part taking one level
  (``unify_mixed_vertebrae``), and this is reported;
- each vertebra class keeps its largest connected component; the voxels of
  other fragments lose that class and fall to their next most likely class
  (usually the vertebra they are embedded in);
- enclosed holes of a vertebra are filled with it;
- a "vertebra" too narrow to be one (a rod, a vessel) is removed and reported;
- an "L6" without a vertebral body of its own (the top of the sacrum) is not a
  sixth lumbar vertebra: it falls to its next most likely class other than L5
  and is reported.

The anatomical checks never change a label; they return findings that the
report and stderr show: levels out of cranio-caudal order, gaps, a sixth
lumbar vertebra, one label covering two vertebral bodies (the network's usual
failure when it sees one vertebra more than it expects, e.g. L6), low confidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from LumbarSegLib.geometry import grown_slices
from LumbarSegLib.labels import LUMBAR_CLASSES, NETWORK_CLASSES

L5_CLASS, L6_CLASS = NETWORK_CLASSES.index("L5"), NETWORK_CLASSES.index("L6")
THORACIC_CLASS = NETWORK_CLASSES.index("thoracic")
SACRUM_CLASS = NETWORK_CLASSES.index("sacrum")
MIN_VERTEBRA_ML = 3.0
MAX_COMPONENT_PASSES = 4
LOW_CONFIDENCE = 0.75
# Smallest in-plane extent of anything called a lumbar vertebra: the body alone of the
# smallest adult lumbar vertebra is ~35 mm wide and ~25 mm deep. Catches rods, tubes and
# calcified vessels that a network might label; field-of-view cuts are mostly axial and
# leave the in-plane extent intact.
MIN_WIDTH_MM = 25.0
MIN_DEPTH_MM = 20.0
# Voxels above this are bone (cortical shell, most cancellous bone); the extent check
# uses them so that soft tissue labelled around a narrow bony structure does not count.
BONE_HU = 150.0
# The vertebral body is the anterior part of a vertebra (the arch and processes lie behind
# the canal). Two separate bodies in one label mean it spans two vertebrae (discs between
# bodies are not labelled); a body fragment counts when it is a real body's size.
BODY_FRACTION = 0.3
MIN_BODY_ML = 3.0
MIN_BODY_SHARE = 0.25
# A vertebral body is mixed when the lesser of two adjacent levels holds this share of it.
# Measured on the crop grid (343 bodies of 40 phantoms and the 4 real cases): at most 0.04
# where the network labels a vertebra right, 0.21-0.46 where it mixed two levels (mostly
# the L6 of six-lumbar spines; 0.11 once, on a neighbour of such a vertebra).
MIXED_SHARE = 0.2


@dataclass
class Finding:
    """Something the user must know about the result."""

    code: str
    message: str
    level: str | None = None

    def as_dict(self) -> dict:
        return {"code": self.code, "level": self.level, "message": self.message}


@dataclass
class LevelSummary:
    name: str
    volume_ml: float
    centroid_z_mm: float
    confidence: float


@dataclass
class CleanResult:
    labels: np.ndarray
    levels: dict[str, LevelSummary] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)


def keep_largest_components(probabilities: np.ndarray, voxel_ml: float) -> None:
    """Per vertebra class, keep the largest component; drop the class elsewhere (in place).

    Dropped voxels fall to their next most likely class, which can leave a new
    stray piece of another class (a fragment of L5 whose runner-up is L6, say),
    so the pass repeats until nothing more is dropped.
    """
    for _ in range(MAX_COMPONENT_PASSES):
        if not _drop_extra_components(probabilities, voxel_ml):
            return


def _drop_extra_components(probabilities: np.ndarray, voxel_ml: float) -> bool:
    labels = probabilities.argmax(axis=0)
    dropped = False
    for cls in LUMBAR_CLASSES:
        components, count = ndimage.label(labels == cls)
        if count == 0:
            continue
        sizes = np.bincount(components.ravel())[1:]
        keep = int(np.argmax(sizes)) + 1
        drop = (components > 0) & (components != keep)
        if sizes[keep - 1] * voxel_ml < MIN_VERTEBRA_ML:
            drop |= components == keep
        if drop.any():
            probabilities[cls][drop] = 0.0
            dropped = True
    return dropped


def fill_holes(probabilities: np.ndarray) -> None:
    """Fill the enclosed holes of every vertebra class with it (in place)."""
    labels = probabilities.argmax(axis=0)
    for cls in LUMBAR_CLASSES:
        mask = labels == cls
        if not mask.any():
            continue
        holes = ndimage.binary_fill_holes(mask) & ~mask
        if holes.any():
            probabilities[:, holes] = 0.0
            probabilities[cls, holes] = 1.0


def drop_implausible_levels(probabilities: np.ndarray, hu: np.ndarray, spacing_mm: float) -> list[Finding]:
    """Remove vertebra classes whose bone is too narrow for a vertebra (in place).

    Axis 2 of the canonical grid is left-right, axis 1 antero-posterior.
    """
    labels = probabilities.argmax(axis=0)
    findings = []
    for cls in LUMBAR_CLASSES:
        mask = labels == cls
        if not mask.any():
            continue
        _, rows, columns = np.nonzero(mask & (hu > BONE_HU))
        width = (columns.max() - columns.min() + 1) * spacing_mm if columns.size else 0.0
        depth = (rows.max() - rows.min() + 1) * spacing_mm if rows.size else 0.0
        if width < MIN_WIDTH_MM or depth < MIN_DEPTH_MM:
            probabilities[:, mask] = 0.0
            probabilities[0, mask] = 1.0
            name = NETWORK_CLASSES[cls]
            findings.append(Finding(
                "implausible_level",
                f"a structure labelled {name} (bone {width:.0f} x {depth:.0f} mm) is too narrow to be a vertebra: removed",
                name,
            ))
    return findings


def drop_bodiless_l6(probabilities: np.ndarray, voxel_ml: float) -> list[Finding]:
    """Give an "L6" without a vertebral body of its own its next most likely class other than L5 (in place).

    A sixth lumbar vertebra has a body like L5's. What the network sometimes
    calls L6 on a normal spine has no body-sized anterior piece
    (``count_bodies``): it is the top of the sacrum, which the network took
    for a vertebra below L5, so it is not part of L5 either. A mixture of L5
    and L6 within one vertebra is resolved before (``unify_mixed_vertebrae``).
    """
    l6 = probabilities.argmax(axis=0) == L6_CLASS
    if not l6.any() or count_bodies(l6, voxel_ml) > 0:
        return []
    probabilities[L5_CLASS][l6] = probabilities[L6_CLASS][l6] = 0.0
    return [Finding(
        "implausible_level",
        f"a structure labelled L6 ({l6.sum() * voxel_ml:.1f} mL) has no vertebral body of its own: not a sixth"
        " lumbar vertebra; given its next most likely label other than L5",
        "L6",
    )]


def drop_absent_classes(probabilities: np.ndarray, labels: np.ndarray) -> None:
    """Zero every class that wins no voxel of ``labels`` and renormalise (in place).

    The restoration interpolates probabilities between crop voxels, where a class that
    lost everywhere (a removed level, say) could still come out on top between two
    voxels won by different classes; without it, it cannot. Per voxel the argmax is unchanged;
    a voxel left with no probability at all (every other class underflowed to zero in the
    softmax before the cleaning removed its winner) becomes background, as its argmax
    already says, whether or not any class is absent.
    """
    absent = np.setdiff1d(np.arange(probabilities.shape[0]), np.unique(labels))
    probabilities[absent] = 0.0
    total = probabilities.sum(axis=0)
    empty = total == 0
    probabilities[0][empty] = total[empty] = 1.0
    probabilities /= total


def body_part(mask: np.ndarray) -> np.ndarray:
    """The anterior ``BODY_FRACTION`` of a vertebra's mask: its body, without the arch and processes.

    Axis 1 of the canonical grid runs anterior (index 0) to posterior.
    """
    rows = np.nonzero(mask.any(axis=(0, 2)))[0]
    anterior_end = rows[0] + int(BODY_FRACTION * (rows[-1] - rows[0])) + 1
    body = np.zeros_like(mask)
    body[:, :anterior_end] = mask[:, :anterior_end]
    return body


def vertebral_bodies(mask: np.ndarray, voxel_ml: float) -> list[np.ndarray]:
    """The vertebral bodies in a mask: separate body-sized pieces of its anterior part, superior first.

    Axis 0 of the canonical grid runs inferior (index 0) to superior, axis 1
    anterior (index 0) to posterior.
    """
    if not mask.any():
        return []
    components, _ = ndimage.label(body_part(mask))
    sizes = np.bincount(components.ravel())[1:]
    kept = np.nonzero((sizes >= MIN_BODY_SHARE * sizes.max()) & (sizes * voxel_ml >= MIN_BODY_ML))[0] + 1
    extents = ndimage.find_objects(components)
    heights = [extents[number - 1][0].start + extents[number - 1][0].stop for number in kept]  # twice the middle
    return [components == kept[i] for i in np.argsort(heights)[::-1]]


def count_bodies(mask: np.ndarray, voxel_ml: float) -> int:
    """Number of vertebral bodies in one label's mask (``vertebral_bodies``)."""
    return len(vertebral_bodies(mask, voxel_ml))


def split_by_bodies(region: np.ndarray, bodies: list[np.ndarray]) -> np.ndarray:
    """Label each voxel of ``region`` with the body (1, 2, ...) it belongs to, 0 outside.

    A watershed of the region's distance map seeded on the bodies: the parts
    meet where the region is narrowest between them (discs and facet joints).
    """
    extent = ndimage.find_objects(region.astype(np.uint8))[0]
    window = grown_slices(extent, region.shape)
    markers = np.zeros(region[window].shape, dtype=np.uint8)
    for number, body in enumerate(bodies, start=1):
        markers[body[window]] = number
    depth = sitk.SignedMaurerDistanceMap(
        sitk.GetImageFromArray(region[window].astype(np.uint8)), insideIsPositive=False, squaredDistance=False,
        useImageSpacing=False,
    )
    parts = sitk.MorphologicalWatershedFromMarkers(
        depth, sitk.GetImageFromArray(markers), markWatershedLine=False, fullyConnected=True,
    )
    result = np.zeros(region.shape, dtype=np.uint8)
    result[window] = np.where(region[window], sitk.GetArrayFromImage(parts), 0)
    return result


def _is_mixed(body_labels: np.ndarray, upper: int, lower: int) -> bool:
    return min((body_labels == upper).sum(), (body_labels == lower).sum()) >= MIXED_SHARE * body_labels.size


def unify_mixed_vertebrae(probabilities: np.ndarray, voxel_ml: float) -> list[Finding]:
    """Give every vertebra that two adjacent levels share one of them (in place).

    For each pair of adjacent lumbar levels, top down, the vertebral bodies of
    their union are found; when one is mixed (the lesser level holds at least
    ``MIXED_SHARE`` of it), the union is one vertebra per body: with one body it
    takes the level with more probability over the union, with two the union
    is split between them (``split_by_bodies``), the upper part taking the
    upper level. In each part the chosen level takes the pair's summed
    probability, so the vertebra's boundary is the network's own for "either
    level". Three or more bodies are left to ``merged_levels``.
    """
    findings = []
    labels = probabilities.argmax(axis=0)
    for upper, lower in zip(LUMBAR_CLASSES, LUMBAR_CLASSES[1:]):
        union = (labels == upper) | (labels == lower)
        bodies = vertebral_bodies(union, voxel_ml)
        if len(bodies) > 2 or not any(_is_mixed(labels[body], upper, lower) for body in bodies):
            continue
        if len(bodies) == 1:
            kept = upper if probabilities[upper][union].sum() >= probabilities[lower][union].sum() else lower
            parts = [(union, kept)]
            outcome = f"it is now {NETWORK_CLASSES[kept]}"
        else:
            split = split_by_bodies(union, bodies)
            parts = [(split == 1, upper), (split == 2, lower)]
            outcome = "it and the vertebra next to it now carry one each"
        either = probabilities[upper] + probabilities[lower]
        for part, kept in parts:
            dropped = lower if kept == upper else upper
            probabilities[kept][part] = either[part]
            probabilities[dropped][part] = 0.0
        labels = probabilities.argmax(axis=0)
        findings.append(Finding(
            "mixed_levels",
            f"{NETWORK_CLASSES[upper]} and {NETWORK_CLASSES[lower]} were mixed within one vertebra ({outcome}):"
            " the network could not tell its level; check the level count",
            NETWORK_CLASSES[lower],
        ))
    return findings


def merged_levels(labels: np.ndarray, voxel_ml: float) -> list[Finding]:
    """Report every lumbar label that covers more than one vertebral body."""
    findings = []
    for cls in LUMBAR_CLASSES:
        mask = labels == cls
        if mask.any() and count_bodies(mask, voxel_ml) > 1:
            name = NETWORK_CLASSES[cls]
            findings.append(Finding(
                "level_spans_two_vertebrae",
                f"{name} covers two vertebral bodies: the level count is in doubt (possibly a sixth lumbar"
                " vertebra) and the labels around it are probably shifted; check the levels",
                name,
            ))
    return findings


def summarize_levels(probabilities: np.ndarray, labels: np.ndarray, *, spacing_mm: float,
                     origin_z_mm: float) -> dict[str, LevelSummary]:
    """Volume, cranio-caudal centroid and mean winning probability of each present level."""
    voxel_ml = spacing_mm**3 / 1000.0
    confidence = probabilities.max(axis=0)
    levels = {}
    for cls in LUMBAR_CLASSES + (THORACIC_CLASS, SACRUM_CLASS):
        mask = labels == cls
        count = int(mask.sum())
        # The anchors are not cleaned (they are not output): a few stray voxels are not a vertebra
        # and must not enter the order check.
        minimum = MIN_VERTEBRA_ML / voxel_ml if cls in (THORACIC_CLASS, SACRUM_CLASS) else 1
        if count < minimum:
            continue
        rows = np.nonzero(mask)[0]
        levels[NETWORK_CLASSES[cls]] = LevelSummary(
            name=NETWORK_CLASSES[cls],
            volume_ml=count * voxel_ml,
            centroid_z_mm=origin_z_mm + float(rows.mean()) * spacing_mm,
            confidence=float(confidence[mask].mean()),
        )
    return levels


def anatomical_findings(levels: dict[str, LevelSummary]) -> list[Finding]:
    """Check the levels against anatomy; never relabel, only report."""
    findings: list[Finding] = []
    lumbar = [NETWORK_CLASSES[c] for c in LUMBAR_CLASSES if NETWORK_CLASSES[c] in levels]
    if not lumbar:
        return [Finding("no_lumbar_vertebra", "no lumbar vertebra was segmented")]
    ordered = [levels[name] for name in lumbar]
    thoracic, sacrum = levels.get("thoracic"), levels.get("sacrum")
    if thoracic is not None:
        ordered.insert(0, thoracic)
    if sacrum is not None:
        ordered.append(sacrum)
    for upper, lower in zip(ordered, ordered[1:]):
        if upper.centroid_z_mm <= lower.centroid_z_mm:
            findings.append(Finding(
                "label_order", f"{upper.name} lies below {lower.name}: the level labels contradict anatomy; check them",
                lower.name,
            ))
    indices = [LUMBAR_CLASSES.index(NETWORK_CLASSES.index(name)) for name in lumbar]
    for missing in sorted(set(range(min(indices), max(indices) + 1)) - set(indices)):
        name = NETWORK_CLASSES[LUMBAR_CLASSES[missing]]
        findings.append(Finding("missing_level", f"{name} is missing between the segmented levels", name))
    for name in ("L1", "L2", "L3", "L4", "L5"):
        if name not in levels and not any(f.level == name for f in findings):
            findings.append(Finding(
                "level_not_found", f"{name} was not found (outside the field of view or not recognised)", name,
            ))
    if "L6" in levels:
        findings.append(Finding(
            "transitional_anatomy",
            "six lumbar-type vertebrae found (L6): transitional lumbosacral anatomy; confirm the level count",
            "L6",
        ))
    for summary in levels.values():
        if summary.name in lumbar and summary.confidence < LOW_CONFIDENCE:
            findings.append(Finding(
                "low_confidence", f"{summary.name} has low confidence ({summary.confidence:.2f}); review it",
                summary.name,
            ))
    return findings


def clean(probabilities: np.ndarray, *, hu: np.ndarray, spacing_mm: float, origin_z_mm: float) -> CleanResult:
    """Clean probabilities in place and check the result.

    Args:
        probabilities: (classes, z, y, x) on the canonical crop grid (axis 0 = superior).
        hu: the CT in HU on the same grid.
        spacing_mm: isotropic spacing of that grid.
        origin_z_mm: physical z of the grid's first slice.
    """
    voxel_ml = spacing_mm**3 / 1000.0
    unified = unify_mixed_vertebrae(probabilities, voxel_ml)
    keep_largest_components(probabilities, voxel_ml)
    fill_holes(probabilities)
    removed = drop_bodiless_l6(probabilities, voxel_ml) + drop_implausible_levels(probabilities, hu, spacing_mm)
    labels = probabilities.argmax(axis=0).astype(np.uint8)
    levels = summarize_levels(probabilities, labels, spacing_mm=spacing_mm, origin_z_mm=origin_z_mm)
    drop_absent_classes(probabilities, labels)
    findings = unified + removed + anatomical_findings(levels) + merged_levels(labels, voxel_ml)
    return CleanResult(labels=labels, levels=levels, findings=findings)
