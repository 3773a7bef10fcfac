"""Renderable structures of an Anatomy: a world box, a label and a field (signed distance, HU)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np

from . import shapes
from .anatomy import Anatomy, Blob, IliacWing, Material, Tube, Vertebra
from .shapes import Frame

_FAR = 1.0e4
_IDENTITY = Frame.make((0.0, 0.0, 0.0))


@dataclass(frozen=True)
class Context:
    """Rendering options seen by the fields: partial-volume width h (mm), soft edges or exact."""

    h: float
    soft: bool

    def blend(self, sdf, inside, outside, depth: float):
        """``inside`` deeper than ``depth`` below the surface, ``outside`` in the shell (e.g. cortex)."""
        if self.soft:
            t = np.clip((sdf + depth) / self.h + 0.5, 0.0, 1.0)
            return inside + (outside - inside) * t
        return np.where(sdf > -depth, np.float32(outside), inside)


@dataclass(frozen=True)
class Structure:
    name: str
    lo: np.ndarray
    hi: np.ndarray
    field: Callable  # (block, ctx) -> (sdf, hu)
    label: int | None = None


@lru_cache(maxsize=8)
def structures(anatomy: Anatomy) -> tuple[Structure, ...]:
    """All structures of ``anatomy`` in painting order (later ones win)."""
    out = [_table(anatomy), _body(anatomy)]
    for item in anatomy.soft + anatomy.bones:
        out += _item(item)
    out += _discs(anatomy) + _canals(anatomy)
    out += [_vertebra(v) for v in anatomy.vertebrae]
    out.append(_sacrum(anatomy))
    for item in anatomy.lesions + anatomy.metal:
        out += _item(item)
    return tuple(out)


# -- generic items --------------------------------------------------------------------------------
def _material_hu(material: Material, sdf, local, ctx: Context, world_y=None):
    hu = np.full(sdf.shape, material.hu, np.float32)
    if material.texture or material.mottled_gas:
        inside = sdf < ctx.h
        u, v, w = (np.broadcast_to(c, sdf.shape)[inside] for c in local)
    if material.texture and material.cortex:
        hu[inside] += shapes.speckle(u, v, w, cell=1.4, seed=int(material.hu)) * np.float32(material.texture)
    elif material.texture:
        # Seeded by the material's numbers, not hash(): that must not vary between processes.
        rng = np.random.default_rng([int(abs(material.hu) * 1000), int(material.texture * 1000)])
        hu[inside] += shapes.waves(u, v, w, shapes.random_waves(rng, material.texture))
    if material.mottled_gas:
        bubbles = shapes.speckle(u, v, w, cell=4.0, seed=int(material.hu * 100) % 1000, order=3)
        hu[inside] = np.where(bubbles > np.float32(1.6 - 2.4 * material.mottled_gas), np.float32(-1000), hu[inside])
    if material.gas_level is not None and world_y is not None:
        hu = np.where(world_y < material.gas_level, np.float32(-1000), hu)
    if material.cortex:
        hu = ctx.blend(sdf, hu, material.cortical_hu, material.cortex)
    return hu


def _item(item) -> list[Structure]:
    if isinstance(item, Blob):
        return [_blob(item)]
    if isinstance(item, IliacWing):
        return [_iliac_wing(item)]
    return _tube(item)


def _blob(blob: Blob) -> Structure:
    a, b, c = blob.semi
    frame = blob.frame
    lo, hi = frame.world_box((-a - 2, -b - 2, -c - 2), (a + 2, b + 2, c + 2))
    needs_y = blob.material.gas_level is not None

    def field(block, ctx):
        u, v, w = block.local(frame)
        sdf = shapes.ellipsoid(u, v, w, a, b, c)
        world_y = block.local(_IDENTITY)[1] if needs_y else None
        return sdf, _material_hu(blob.material, sdf, (u, v, w), ctx, world_y)

    return Structure(blob.name, lo, hi, field)


def _tube(tube: Tube) -> list[Structure]:
    """One structure per segment; each also evaluates its neighbours so that joints stay seamless."""
    points = np.asarray(tube.points, float)
    scale = np.array([tube.aspect, 1.0, 1.0])
    frame = Frame.make((0.0, 0.0, 0.0), np.diag(1.0 / scale))  # local = world * scale
    scaled = points * scale
    radii = tube.radii
    out = []
    for s in range(len(points) - 1):
        pad = max(radii[s], radii[s + 1]) + 2
        lo = np.minimum(points[s], points[s + 1]) - pad / np.array([tube.aspect, 1, 1])
        hi = np.maximum(points[s], points[s + 1]) + pad / np.array([tube.aspect, 1, 1])
        segments = [k for k in (s - 1, s, s + 1) if 0 <= k < len(points) - 1]

        def field(block, ctx, segments=segments):
            u, v, w = block.local(frame)
            sdf = shapes.union(*[shapes.capsule(u, v, w, scaled[k], scaled[k + 1], radii[k], radii[k + 1])
                                 for k in segments])
            return sdf, _material_hu(tube.material, sdf, (u, v, w), ctx, v)

        out.append(Structure(f"{tube.name}_{s}", lo, hi, field))
    return out


# -- body and table -------------------------------------------------------------------------------
def _table(anatomy: Anatomy) -> Structure:
    """Carbon-fibre table: a slab curved up at the sides, dense skin around a foam core."""
    body = anatomy.body
    half_width, rise, thickness = 240.0, 25.0, body.table_thickness
    half = np.array([half_width, (thickness + rise) / 2, _FAR])
    centre = np.array([body.centre_x, body.table_y + (thickness - rise) / 2, 0.0])
    frame = Frame.make((body.centre_x, body.table_y, 0.0))

    def field(block, ctx):
        x, y, _ = block.local(frame)
        top = -np.float32(rise) * (x / np.float32(half_width)) ** 2
        sdf = np.maximum(np.abs(x) - np.float32(half_width), np.maximum(top - y, y - top - np.float32(thickness)))
        shell = ctx.blend(sdf, np.full(sdf.shape, -920.0, np.float32), 400.0, 3.0)
        return sdf, shell

    return Structure("table", centre - half, centre + half, field)


def _body(anatomy: Anatomy) -> Structure:
    body = anatomy.body
    frame = Frame.make((body.centre_x, body.centre_y, 0.0))
    back = body.back_y - body.centre_y
    pad = body.half_width * (1 + body.hip_gain) + 5
    lo = np.array([body.centre_x - pad, body.centre_y - body.half_depth - 5, -_FAR])
    hi = np.array([body.centre_x + pad, body.back_y + 5, _FAR])
    rng = np.random.default_rng(anatomy.seed)
    fat_texture = shapes.random_waves(rng, 8.0, (6.0, 30.0), count=2)

    def field(block, ctx):
        x, y, z = block.local(frame)
        hips = np.clip((body.hip_z - z) / 80.0, 0.0, 1.0)
        a = np.float32(body.half_width) * (1 + np.float32(body.hip_gain) * hips * hips * (3 - 2 * hips))
        # The ellipse reaches beyond the back, which lies flat on the table over ~60 % of the width.
        flat = np.float32(0.12 * body.half_depth)
        sdf = np.maximum(shapes.ellipse(x, y - flat, a, np.float32(body.half_depth) + flat), y - np.float32(back))
        # Subcutaneous fat, abdominal wall and visceral fat as layers parallel to the skin.
        fat = np.float32(body.fat_hu) + shapes.waves(x, y, z, fat_texture)
        hu = np.where(sdf < -body.fat, np.float32(body.muscle_hu), fat)
        hu = np.where(sdf < -(body.fat + body.wall), fat + np.float32(10.0), hu)
        return sdf, hu

    return Structure("body", lo, hi, field)


# -- spine ----------------------------------------------------------------------------------------
def _discs(anatomy: Anatomy) -> list[Structure]:
    out = []
    sacral = anatomy.sacrum[0]
    columns = list(anatomy.vertebrae)
    hus = anatomy.disc_hu or (85.0,) * len(columns)
    for k, upper in enumerate(columns):
        if k + 1 < len(columns):
            lower = columns[k + 1]
            lower_frame, lower_top = lower.frame, lower.height / 2 - lower.concavity - 1.5
            lower_wedge = lower.wedge
        else:
            lower_frame, lower_top, lower_wedge = sacral.frame, sacral.height / 2 - 1.5, 0.0
        out.append(_disc(upper, lower_frame, lower_top, lower_wedge, hus[k], upper.label in anatomy.vacuum_discs))
    return out


def _disc(upper: Vertebra, lower_frame: Frame, lower_top: float, lower_wedge: float, disc_hu: float,
          vacuum: bool) -> Structure:
    """The disc below ``upper``: annulus brighter than nucleus; a degenerated one may hold a gas cleft."""
    mid_centre = (upper.frame.origin + lower_frame.origin) / 2
    axis = upper.frame.origin - lower_frame.origin
    axis /= np.linalg.norm(axis)
    frame = _aligned(mid_centre, axis, upper.frame)
    a, b = upper.width / 2 * 1.02, upper.depth / 2 * 1.02
    bottom = -upper.height / 2 + upper.concavity + 1.5
    half = np.linalg.norm(upper.frame.origin - lower_frame.origin) / 2
    lo, hi = frame.world_box((-a - 3, -b - 3, -half), (a + 3, b + 3, half))

    def field(block, ctx):
        u, v, w = block.local(frame)
        wl = block.local(lower_frame)[2]
        wu = block.local(upper.frame)[2]
        rho = (u / a) ** 2 + (v / b) ** 2
        sdf = np.maximum(shapes.ellipse(u, v, a, b), np.maximum(lower_top - lower_wedge - wl, wu - bottom))
        hu = np.float32(disc_hu - 15.0) + np.float32(30.0) * np.minimum(rho, 1.0)
        if vacuum:
            hu = np.where((shapes.ellipse(u, v, a * 0.45, b * 0.3) < 0) & (np.abs(w) < 1.2), np.float32(-700.0), hu)
        return sdf, hu

    return Structure(f"disc_{upper.label}", lo, hi, field)


def _aligned(centre, axis, reference: Frame) -> Frame:
    w = axis / np.linalg.norm(axis)
    u = reference.matrix[:, 0] - (reference.matrix[:, 0] @ w) * w
    u /= np.linalg.norm(u)
    return Frame.make(centre, np.column_stack([u, np.cross(w, u), w]))


def _canals(anatomy: Anatomy) -> list[Structure]:
    out = []
    for v in anatomy.vertebrae:
        cw, cd = v.canal
        centre_v = v.depth / 2 + cd
        half = v.height / 2 + 8
        lo, hi = v.frame.world_box((-cw - 1, centre_v - cd - 1, -half), (cw + 1, centre_v + cd + 1, half))
        cord = v.thoracic or v.label in (20, 28)

        def field(block, ctx, v=v, cw=cw, cd=cd, centre_v=centre_v, half=half, cord=cord):
            u, vv, w = block.local(v.frame)
            radial = shapes.ellipse(u, vv - centre_v, cw, cd)
            sdf = np.maximum(radial, np.abs(w) - half)
            sac = shapes.ellipse(u, vv - centre_v, cw * 0.8, cd * 0.8)
            hu = np.where(sac < 0, np.float32(8.0), np.float32(-60.0))
            if cord:
                hu = np.where(shapes.ellipse(u, vv - centre_v, 4.5, 4.0) < 0, np.float32(35.0), hu)
            return sdf, hu

        out.append(Structure(f"canal_{v.label}", lo, hi, field))
    return out


def _body_sdf(v: Vertebra, u, vv, w):
    """Vertebral body: elliptic cylinder with a waist, concave endplates, a posterior notch, a wedge."""
    a, b, h = v.width / 2, v.depth / 2, v.height / 2
    waist = 1.0 - 0.07 * (1.0 - np.minimum((w / h) ** 2, 1.0))
    radial = shapes.ellipse(u, vv, a * waist, b * waist)
    radial = np.maximum(radial, -shapes.ellipse(u, vv - (b + 2.0), a * 0.35, 5.0))
    rho = np.minimum((u / a) ** 2 + (vv / b) ** 2, 1.0)
    top = h - v.concavity * (1 - rho) - v.wedge * (0.5 - 0.5 * np.clip(vv / b, -1, 1))
    bottom = -h + v.concavity * (1 - rho)
    return np.maximum(radial, np.maximum(w - top, bottom - w))


def _osteophytes(v: Vertebra, u, vv, w):
    """Anterolateral beaks (flattened tori) around both endplate rims."""
    rim = shapes.ellipse(u, vv, v.width / 2, v.depth / 2)
    spur = np.full(np.shape(u), 1e3, np.float32)
    for level in (v.height / 2 * 0.9, -v.height / 2 * 0.9):
        spur = np.minimum(spur, np.sqrt(rim * rim + (1.8 * (w - level)) ** 2) - v.osteophyte)
    return np.maximum(spur, vv - 0.3 * v.depth / 2)


def posterior_parts(v: Vertebra) -> list[shapes.Capsule]:
    """Pedicles, laminae, transverse and articular processes, spinous process (local frame)."""
    b, h = v.depth / 2, v.height / 2
    cw, cd = v.canal
    pr = v.pedicle
    px = cw + pr
    pz = h * 0.12
    back = b + 2 * cd
    thick = (3.0 if v.thoracic else 3.8) * v.arch[0]
    facet = (3.5 if v.thoracic else 4.5) * v.arch[1]
    parts = []
    for side in (-1.0, 1.0):
        root = (side * px, b + cd * 1.2, pz)
        if v.thoracic:
            tip = (side * (px + v.tp_length * 0.75), b + cd + v.tp_length * 0.6, pz + 4)
        else:
            tip = (side * (px + v.tp_length), b + cd * 0.8 + 3, pz - v.tp_drop)
        parts += [
            shapes.Capsule((side * px, b - 6, pz), root, pr, pr, pz, 1.5),
            shapes.Capsule(root, (0.0, back + 3, pz - 4), thick, thick, pz, 2.4),
            shapes.Capsule((side * px, b + cd * 0.8, pz), tip, v.tp_radius, v.tp_radius * 0.8, pz, 1.3),
            shapes.Capsule((side * (px + 1), b + cd * 1.4, pz), (side * (px + 2), b + cd * 1.6, h + 7), facet, facet),
            shapes.Capsule((side * px * 0.6, back + 1, pz - 4), (side * px * 0.55, back + 3, -h - 7), facet, facet),
        ]
    start = np.array([0.0, back + 2, pz - 4])
    end = start + v.sp_length * np.array([0.0, np.cos(v.sp_angle), -np.sin(v.sp_angle)])
    radius = 3.0 if v.thoracic else 3.5
    height = (1.6 if v.thoracic else 3.0) * v.arch[2]
    parts.append(shapes.Capsule(tuple(start), tuple(end), radius, radius * 0.9, start[2], height))
    return parts


def _vertebra(v: Vertebra) -> Structure:
    lo, hi = v.world_box()
    a, b, h = v.width / 2, v.depth / 2, v.height / 2
    cw, cd = v.canal
    parts = posterior_parts(v)
    spur = v.osteophyte
    body_box = (np.array([-a - 1 - spur, -b - 1 - spur, -h - 1 - spur]), np.array([a + 1 + spur, b + 1, h + 1 + spur]))
    canal_box = (np.array([-cw - 1, b - 1, -h - 20]), np.array([cw + 1, b + 2 * cd + 1, h + 20]))
    frame = v.frame

    def field(block, ctx):
        body = np.full(block.shape, 1e3, np.float32)
        posterior = body.copy()
        canal = body.copy()
        shapes.min_into(body, block, frame, body_box, lambda u, vv, w: _body_sdf(v, u, vv, w))
        spurs = None
        if spur:
            spurs = np.full(block.shape, 1e3, np.float32)
            shapes.min_into(spurs, block, frame, body_box, lambda u, vv, w: _osteophytes(v, u, vv, w))
            posterior = np.minimum(posterior, spurs)
        for part in parts:
            shapes.min_into(posterior, block, frame, part.box(), part)
        shapes.min_into(canal, block, frame, canal_box, lambda u, vv, w: shapes.ellipse(u, vv - (b + cd), cw, cd))
        sdf = np.maximum(np.minimum(body, posterior), -canal)
        inner = np.where(body <= posterior, np.float32(v.cancellous_hu), np.float32(v.cancellous_hu + 40))
        u, vv, w = block.local(frame)
        inside = sdf < ctx.h
        # Trabecular speckle stretched along the body axis (vertical trabeculae).
        inner[inside] += shapes.waves(u[inside], vv[inside], w[inside], v.texture) * np.float32(0.5) + \
            shapes.speckle(u[inside], vv[inside], w[inside] * np.float32(0.45), cell=1.3, seed=v.label) * \
            np.float32(v.trabecular)
        # Basivertebral venous channel: a small dark gap behind the middle of the body.
        channel = (shapes.ellipse(u, vv - (b - 5.0), 2.0, 5.0) < 0) & (np.abs(w) < 2.5) & (body < 0)
        inner[channel] = np.float32(40.0)
        if spurs is not None:
            inner = np.where(spurs < body, np.float32(v.cortical_hu), inner)
        if v.sclerosis:
            near_endplate = np.clip(1.0 - (np.float32(v.height / 2) - np.abs(w)) / np.float32(5.0), 0.0, 1.0)
            inner += np.where(body < 0, np.float32(v.sclerosis) * near_endplate, np.float32(0.0))
        # The arch (pedicles, laminae, processes) has a thicker cortex than the body.
        cortex = np.where(body <= posterior, np.float32(v.cortex), np.float32(1.5 * v.cortex))
        return sdf, ctx.blend(sdf, inner, v.cortical_hu, cortex)

    return Structure(f"vertebra_{v.label}", lo, hi, field, v.label)


def _rounded_rect(u, v, half_u, half_v, radius: float):
    qu = np.abs(u) - half_u + radius
    qv = np.abs(v) - half_v + radius
    return np.sqrt(np.maximum(qu, 0) ** 2 + np.maximum(qv, 0) ** 2) + np.minimum(np.maximum(qu, qv), 0) - radius


S1_LAMINA_DROP = 0.35  # of the S1 segment's height


def _sacrum(anatomy: Anatomy) -> Structure:
    """Fused segments with a tapering, rounded-rectangle cross-section, canal and foramina."""
    segments = anatomy.sacrum
    halves = [s.width / 2 + s.ala for s in segments] + [segments[-1].width * 0.35]
    boxes = [s.frame.world_box((-halves[k] - 3, -s.depth / 2 - 3, -s.height / 2 - 3),
                               (halves[k] + 3, s.depth / 2 + 26, s.height / 2 + 12)) for k, s in enumerate(segments)]
    lo, hi = np.min([b[0] for b in boxes], axis=0), np.max([b[1] for b in boxes], axis=0)
    top = segments[0]
    l5 = anatomy.vertebrae[-1]
    px = l5.canal[0] + l5.pedicle + 2
    facets = [shapes.Capsule((side * px, top.depth / 2 + 12, 0.0), (side * px, top.depth / 2 + 14, top.height / 2 + 9),
                             4.5, 4.5) for side in (-1.0, 1.0)]
    material = anatomy.sacrum_material

    def segment_sdf(k, s):
        a, b, h = s.width / 2, s.depth / 2, s.height / 2
        back = b + max(6.0, 2.4 * b * 0.6)

        def sdf(u, v, w):
            t = np.clip(0.5 - w / s.height, 0.0, 1.0)
            half = halves[k] + (halves[k + 1] - halves[k]) * t
            centre = (back - b) / 2
            upper = h if k == 0 else h + 5.0
            lower = h + 0.6 if k == len(segments) - 1 else h + 5.0
            out = np.maximum(_rounded_rect(u, v - centre, half, (back + b) / 2, min(8.0, b * 0.6)),
                             np.maximum(w - upper, -lower - w))
            lateral = np.maximum(np.abs(u) - a, 0.0)
            out = np.maximum(out, -b + 0.45 * lateral - v)  # the alae lie behind the bodies
            out = np.maximum(out, np.abs(u) - half + 0.7 * np.maximum(v - b - 4.0, 0.0))  # narrower dorsum
            if k == 0:  # the alae slope down laterally from the S1 endplate
                out = np.maximum(out, w - h + 0.3 * lateral)
                # S1's laminae start below its endplate: the L5/S1 interlaminar space behind the disc.
                out = np.maximum(out, np.minimum(w - h + S1_LAMINA_DROP * s.height, v - b - 1.0))
            # A canal as wide as the lumbar ones, tapering with the segments, behind a thin dorsal wall.
            canal_depth = max(b * 0.4, 3.0)
            holes = shapes.ellipse(u, v - (b + canal_depth), max(a * 0.6, 5.0), canal_depth)
            if k < len(segments) - 1:
                for side in (-1.0, 1.0):
                    holes = np.minimum(holes, shapes.capsule(u, v, w, (side * (a + 6), -b - 10, -h),
                                                             (side * (a + 6), back + 5, -h), 4.0))
            return np.maximum(out, -holes)

        box = (np.array([-halves[k] - 1, -b - 1, -h - 6]), np.array([halves[k] + 1, back + 1, h + 6]))
        return box, sdf

    parts = [(s.frame, *segment_sdf(k, s)) for k, s in enumerate(segments)]

    def field(block, ctx):
        sdf = np.full(block.shape, 1e3, np.float32)
        for frame, box, function in parts:
            shapes.min_into(sdf, block, frame, box, function)
        for facet in facets:
            shapes.min_into(sdf, block, top.frame, facet.box(), facet)
        hu = _material_hu(material, sdf, block.local(top.frame), ctx)
        return sdf, hu

    return Structure("sacrum", lo, hi, field, 26)


def _iliac_wing(wing: IliacWing) -> Structure:
    frame = Frame.make(wing.centre)
    a, b, c = wing.semi
    side = wing.side
    x_range = sorted((side * (wing.medial - 1), side * (a + 12)))
    lo = frame.to_world((x_range[0], wing.front - 2, wing.bottom - 2))
    hi = frame.to_world((x_range[1], b + 12, wing.crest + 8))

    def field(block, ctx):
        x, y, z = block.local(frame)
        crest = wing.crest - 25.0 * (y / b) ** 2
        lateral = side * x - wing.medial
        thickness = (2.0 + 5.0 * np.clip(1 - (crest - z) / 15.0, 0, 1) + 7.0 * np.clip(1 - lateral / 25.0, 0, 1))
        shell = np.abs(shapes.ellipsoid(x, y, z, a, b, c)) - thickness
        limits = np.maximum(np.maximum(-lateral, wing.front - y), np.maximum(z - crest, wing.bottom - z))
        sdf = np.maximum(shell, limits)
        return sdf, _material_hu(wing.material, sdf, (x, y, z), ctx)

    return Structure(wing.name, lo, hi, field)
