"""Random sampling of a phantom patient (``sample_anatomy``)."""

from __future__ import annotations

import numpy as np

from .anatomy import (
    _DEPTH, _DISC, _HEIGHT, _SP_ANGLE, _SP_LENGTH, _TP_LENGTH, _WIDTH, VARIANTS,
    Anatomy, Blob, Body, IliacWing, Material, SacralSegment, Tube, Vertebra, frame_along, interpolate, level_plan,
)
from .shapes import Frame, random_waves, rotation

_STEP = 1.0  # mm, arc-length step of the spine curve


def sample_anatomy(seed: int, *, variant: str | None = None) -> Anatomy:
    """A random patient. ``variant=None``: ~85 % normal, the rest spread over the transitional variants."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7301]))
    if variant is None:
        variant = "normal" if rng.random() < 0.85 else str(rng.choice(VARIANTS[1:]))
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    return _Sampler(int(seed), variant, rng).build()


class _Sampler:
    """Builds one Anatomy; methods are the stages, cranio-caudal spine first."""

    def __init__(self, seed: int, variant: str, rng: np.random.Generator):
        self.seed, self.variant, self.rng = seed, variant, rng

    def u(self, a: float, b: float) -> float:
        return float(self.rng.uniform(a, b))

    # -- spine -------------------------------------------------------------------------------------
    def build(self) -> Anatomy:
        rng = self.rng
        plan = level_plan(self.variant)
        scale = self.u(0.92, 1.15)
        self.osteoporosis = rng.random() < 0.3
        base_cancellous = self.u(40, 110) if self.osteoporosis else self.u(110, 250)
        cortical = self.u(700, 1100) if self.osteoporosis else self.u(1000, 1500)
        cortex = self.u(0.3, 0.5) if self.osteoporosis else self.u(0.35, 0.7)
        trabecular = self.u(25, 60)
        degenerative = rng.random() < 0.35

        heights, discs = [], []
        for label, pos in plan:
            heights.append(interpolate(_HEIGHT, pos) * scale * self.u(0.96, 1.04))
            discs.append(interpolate(_DISC, pos) * scale * self.u(0.8, 1.2))
        if rng.random() < 0.4:  # degenerated lower discs
            discs[-1] *= self.u(0.4, 0.9)
            discs[-2] *= self.u(0.5, 1.0)
        if self.variant == "sacralized_L5":
            discs[-1] = self.u(1.5, 4.0)

        # Arc length of each vertebral centre, from the S1 endplate (s = 0) upwards.
        centres_s, s = [], 0.0
        for h, d in zip(reversed(heights), reversed(discs)):
            s += d
            centres_s.append(s + h / 2)
            s += h
        centres_s = centres_s[::-1]
        lumbar_len = centres_s[[i for i, (lab, _) in enumerate(plan) if lab in (20, 28)][-1]] if self.variant == "T13" \
            else centres_s[[i for i, (lab, _) in enumerate(plan) if lab == 20][0]]
        self.curve = self._spine_curve(lumbar_len, s + 40)

        fracture = None
        if rng.random() < 0.1:
            candidates = [lab for lab, _ in plan if lab in (17, 18, 19, 20, 21, 22, 23)]
            fracture = int(rng.choice(candidates))
        vertebrae = []
        rib_pairs = self._rib_lengths(plan)
        twist_noise = np.radians(rng.normal(0, 1.5, len(plan)))
        # Degenerative anterolisthesis: a low lumbar level and everything above slip forward.
        self.slip_level = slip_level = len(plan) - int(rng.integers(1, 3)) if rng.random() < 0.08 else -1
        slip = self.u(4, 14)
        for i, (label, pos) in enumerate(plan):
            point, tangent, twist = self.curve(centres_s[i])
            frame = frame_along(point, tangent, twist + twist_noise[i])
            if i <= slip_level:
                frame = Frame.make(frame.origin - slip * frame.matrix[:, 1], frame.matrix)
            thoracic = label < 20 or label == 28
            lumbar_rank = pos - 6
            width = interpolate(_WIDTH, pos) * scale * self.u(0.95, 1.05)
            depth = interpolate(_DEPTH, pos) * scale * self.u(0.95, 1.05)
            wedge = 0.0
            cancellous = base_cancellous + rng.normal(0, 12) - 4 * lumbar_rank
            if label == fracture:
                wedge = heights[i] * self.u(0.2, 0.45)
                cancellous += self.u(40, 120)
            tp_length = interpolate(_TP_LENGTH, pos) * scale * self.u(0.9, 1.1)
            tp_radius = (3.5 if thoracic else 4.0 + 0.6 * max(lumbar_rank - 2, 0)) * scale
            tp_drop = 0.0
            if self.variant == "sacralized_L5" and label == 24:
                tp_length, tp_radius, tp_drop = self.u(32, 42) * scale, self.u(8, 11) * scale, self.u(8, 14)
            vertebrae.append(Vertebra(
                label=label, frame=frame, width=width, depth=depth, height=heights[i],
                concavity=self.u(0.8, 2.0), wedge=wedge,
                cancellous_hu=float(np.clip(cancellous, 40, 400)), cortical_hu=cortical + rng.normal(0, 40),
                cortex=cortex, canal=((8.5 if thoracic else 10.5 + 0.5 * min(lumbar_rank, 4)) * scale,
                                      (7.5 if thoracic else 8.0) * scale),
                pedicle=(3.5 + 0.3 * pos / 5 if thoracic else 4.0 + 0.6 * lumbar_rank) * scale,
                tp_length=tp_length, tp_radius=tp_radius, tp_drop=tp_drop,
                sp_length=interpolate(_SP_LENGTH, pos) * scale * self.u(0.85, 1.15),
                sp_angle=interpolate(_SP_ANGLE, pos) + np.radians(rng.normal(0, 4)),
                thoracic=thoracic, ribs=rib_pairs.get(label, (0.0, 0.0)),
                texture=random_waves(rng, self.u(15, 35), (2.5, 9.0)), trabecular=trabecular,
                osteophyte=self.u(1.5, 4.0) if degenerative and pos >= 4 and rng.random() < 0.6 else 0.0,
                sclerosis=self.u(80, 300) if degenerative and pos >= 6 and rng.random() < 0.4 else 0.0,
                arch=(self.u(0.85, 1.2), self.u(0.85, 1.2), self.u(0.8, 1.2)),
            ))
        self.vertebrae = vertebrae
        self.sacrum = self._sacrum(scale)
        self.body = self._body()
        soft = self._soft_tissue()
        bones = self._ribs() + self._pelvis(cortical, base_cancellous, cortex)
        metal = self._screws() if rng.random() < 0.1 else ()
        if fracture is not None and rng.random() < 0.3:
            metal += (self._cement(next(v for v in vertebrae if v.label == fracture)),)
        lesions = self._lesions() if rng.random() < 0.08 else ()
        disc_hu = tuple(self.u(65, 110) for _ in plan)
        vacuum = tuple(label for label, _ in plan[-3:] if degenerative and rng.random() < 0.15)
        levels = tuple(v.label for v in vertebrae) + (26,)
        return Anatomy(
            seed=self.seed, variant=self.variant, levels=levels, vertebrae=tuple(vertebrae),
            sacrum=self.sacrum,
            sacrum_material=Material(hu=base_cancellous + 10, texture=30, cortex=cortex, cortical_hu=cortical),
            body=self.body, soft=soft, bones=bones, metal=metal, fracture_level=fracture,
            osteoporosis=bool(self.osteoporosis), disc_heights=tuple(discs), lesions=lesions,
            disc_hu=disc_hu, vacuum_discs=vacuum,
            listhesis_level=plan[self.slip_level][0] if self.slip_level >= 0 else None,
        )

    def _spine_curve(self, lumbar_len: float, top: float):
        """Returns s -> (point, tangent, axial twist); lordosis, kyphosis, mild scoliosis."""
        rng = self.rng
        s = np.arange(-170.0, top + _STEP, _STEP)
        theta0 = np.radians(self.u(25, 45))
        # Sagittal balance: L1 leans back by 10-25 degrees, so that the kyphosis above brings the
        # thoracic spine back over the sacrum.
        lordosis = theta0 + np.radians(self.u(10, 25))
        kyphosis = np.radians(self.u(0.1, 0.2))
        sacral = np.radians(self.u(0.2, 0.35))
        theta = np.where(
            s < 0, theta0 + sacral * s,
            np.where(s <= lumbar_len, theta0 - lordosis * (1 - (1 - s / lumbar_len) ** 2),
                     theta0 - lordosis + kyphosis * (s - lumbar_len)))
        amplitude = np.radians(self.u(0, 6) if rng.random() < 0.88 else self.u(6, 20))
        phi = amplitude * np.sin(2 * np.pi * s / self.u(250, 450) + self.u(0, 2 * np.pi)) * (s > -20)
        tangent = np.stack([np.sin(phi), -np.sin(theta) * np.cos(phi), np.cos(theta) * np.cos(phi)], axis=1)
        points = np.cumsum(tangent, axis=0) * _STEP
        origin = np.array([self.u(-15, 15), self.u(-40, 40), self.u(-450, 150)])
        points += origin - points[np.searchsorted(s, 0.0)]
        twist = -0.6 * phi

        def at(value: float):
            i = np.clip(np.searchsorted(s, value), 1, len(s) - 1)
            f = (value - s[i - 1]) / _STEP
            point = points[i - 1] * (1 - f) + points[i] * f
            return point, tangent[i - 1] * (1 - f) + tangent[i] * f, float(twist[i])

        return at

    def _rib_lengths(self, plan) -> dict[int, tuple[float, float]]:
        """Rib lengths (right, left) in mm; the last rib pair is >= 40 mm, never a 'stump' (< 4 cm)."""
        rib_bearing = [lab for lab, _ in plan if lab < 20 or lab == 28]
        if self.variant == "11_ribs":
            rib_bearing.remove(19)
        lengths = {}
        last = rib_bearing[-1]
        for label in rib_bearing:
            from_last = rib_bearing[::-1].index(label)
            if from_last == 0:
                base = self.u(48, 150)
            elif from_last == 1:
                base = self.u(130, 220)
            else:
                base = self.u(260, 320)
            if self.variant == "T13" and label == last:
                base = self.u(48, 110)
            lengths[label] = (base * self.u(0.85, 1.0), base * self.u(0.85, 1.0))
        return lengths

    def _sacrum(self, scale: float) -> tuple[SacralSegment, ...]:
        segments, s = [], 0.0
        heights = np.array([26, 22, 18, 15, 12]) * scale * self.u(0.92, 1.08)
        widths = np.array([50, 42, 34, 26, 20]) * scale
        depths = np.array([34, 28, 22, 18, 14]) * scale
        alae = np.array([27, 24, 17, 9, 2]) * scale * self.u(0.9, 1.1)
        for h, w, d, a in zip(heights, widths, depths, alae):
            point, tangent, _ = self.curve(s - h / 2)
            segments.append(SacralSegment(frame_along(point, tangent, 0.0), w, d, h, a))
            s -= h + 0.5
        return tuple(segments)

    # -- body and soft tissue --------------------------------------------------------------------
    def _body(self) -> Body:
        lumbar = [v for v in self.vertebrae if not v.thoracic]
        self.erector = self.u(0.9, 1.15)
        back = max(v.frame.to_world((0, v.depth / 2 + 2 * v.canal[1] + max(
            6 + v.sp_length * np.cos(v.sp_angle), 4 + 1.5 * 24 * self.erector * 1.05), 0))[1] for v in lumbar)
        fat = self.u(8, 45)
        back_y = back + self.u(5, 15) + fat * 0.6
        half_depth = self.u(92, 122) + fat * 0.9
        half_width = self.u(135, 165) + fat * 1.1
        table_thickness = self.u(10, 45)
        return Body(
            centre_x=float(self.vertebrae[-1].frame.origin[0] + self.u(-5, 5)),
            centre_y=back_y - half_depth, half_width=half_width, half_depth=half_depth, back_y=back_y,
            fat=fat, wall=self.u(7, 14), hip_z=float(self.sacrum[0].frame.origin[2]), hip_gain=self.u(0.05, 0.18),
            table_y=back_y + self.u(0.0, 3.0), table_thickness=table_thickness,
            fat_hu=self.u(-115, -85), muscle_hu=self.u(35, 60) if self.rng.random() < 0.8 else self.u(10, 35),
        )

    def _vertebra_point(self, label: int, local) -> np.ndarray:
        for v in self.vertebrae:
            if v.label == label:
                return v.frame.to_world(local)
        raise KeyError(label)

    def _soft_tissue(self) -> tuple:
        rng, body = self.rng, self.body
        contrast = rng.choice(["none", "arterial", "portal"], p=[0.35, 0.2, 0.45])
        blood = {"none": 40, "arterial": self.u(200, 350), "portal": self.u(120, 180)}[contrast]
        enhance = {"none": 0.0, "arterial": 0.5, "portal": 1.0}[contrast]
        muscle = Material(hu=body.muscle_hu, texture=8)
        inner_x = body.half_width - body.fat - body.wall
        front = body.centre_y - body.half_depth
        labels = [v.label for v in self.vertebrae]
        lumbar = [v for v in self.vertebrae if not v.thoracic]
        thoracic = [v for v in self.vertebrae if v.thoracic]
        z_of = {v.label: float(v.frame.origin[2]) for v in self.vertebrae}
        s1 = self.sacrum[0].frame.origin
        t12 = [v for v in thoracic if v.label in (19, 28)][-1]
        first_l = lumbar[0]
        soft = []

        def blob(name, centre, semi, material, yaw=0.0, pitch=0.0):
            axes = rotation((0, 0, 1), yaw) @ rotation((1, 0, 0), pitch)
            soft.append(Blob(name, Frame.make(centre, axes), tuple(float(a) for a in semi), material))

        # Lungs first: abdominal organs painted later carve the diaphragm domes.
        dome = z_of[thoracic[-3].label] + self.u(-15, 15)
        cage_x, cage_y, cage_a, cage_b = self._cage(thoracic[-3])
        for side in (-1, 1):
            # Tilted so that the lung bases reach lowest in the posterior costophrenic recesses.
            blob(f"lung_{side}", (cage_x + side * cage_a * 0.5, cage_y + cage_b * 0.2, dome + 110 + side * 8),
                 (cage_a * 0.46, cage_b * 0.78, 160), Material(hu=self.u(-870, -820), texture=40),
                 pitch=self.u(0.25, 0.4))
        blob("heart", (25, front + body.half_depth * 0.55, dome + 60), (65, 55, 60),
             Material(hu=40 + 0.6 * (blood - 40), texture=5))
        liver_hu = self.u(50, 65) + enhance * self.u(30, 50)
        blob("liver", (-inner_x * 0.42, body.centre_y - 5, dome - 75),
             (inner_x * 0.55, body.half_depth * 0.72, self.u(85, 110)), Material(hu=liver_hu, texture=6),
             yaw=self.u(-0.2, 0.2))
        blob("spleen", (inner_x * 0.62, body.centre_y + 30, dome - 60), (28, 48, 55),
             Material(hu=self.u(40, 50) + enhance * 60, texture=5), yaw=-0.5)
        blob("stomach", (inner_x * 0.3, front + 70, dome - 60), (55, 45, 50),
             Material(hu=self.u(10, 35), texture=6, gas_level=front + 70 - self.u(10, 40)), yaw=0.3)
        kidney_hu = self.u(28, 38) + enhance * self.u(100, 150)
        for side, label in ((1, first_l.label), (-1, labels[labels.index(first_l.label) + 1])):
            centre = self._vertebra_point(label, (side * (first_l.width / 2 + 42), 6, 0))
            blob(f"kidney_{side}", centre, (26, 22, 55), Material(hu=kidney_hu, texture=6),
                 yaw=side * 0.5, pitch=-0.25)
            blob(f"renal_sinus_{side}", centre - np.array([side * 12, 4, 0]), (9, 9, 28),
                 Material(hu=body.fat_hu + 20, texture=5), yaw=side * 0.5, pitch=-0.25)
        blob("gallbladder", (-inner_x * 0.3, front + 60, dome - 120), (18, 18, 35), Material(hu=self.u(0, 20)),
             pitch=0.3)
        # Bowel: colon frame and small-bowel loops with air-fluid levels.
        oral = rng.random() < 0.2  # positive oral contrast: bright loops that are not bone
        colon_r = self.u(18, 28)
        stool = Material(hu=self.u(0, 40), texture=60, mottled_gas=self.u(0.15, 0.5))
        z_top = z_of[first_l.label] + 10
        soft.append(Tube("colon", (
            (-inner_x * 0.7, body.centre_y + 10, s1[2] - 30), (-inner_x * 0.72, body.centre_y, z_top - 40),
            (-inner_x * 0.5, front + 60, z_top), (0, front + 50, z_top - 30), (inner_x * 0.55, front + 65, z_top + 20),
            (inner_x * 0.72, body.centre_y + 10, z_top - 30), (inner_x * 0.7, body.centre_y, s1[2] - 20),
            (inner_x * 0.2, body.centre_y - 20, s1[2] - 70), (0, s1[1] + 10, s1[2] - 100)),
            (colon_r,) * 9, stool))
        for k in range(int(rng.integers(10, 25))):
            centre = (self.u(-0.55, 0.55) * inner_x, self.u(front + 35, body.centre_y),
                      self.u(s1[2] - 60, z_top - 20))
            semi = (self.u(12, 28), self.u(12, 25), self.u(12, 35))
            gas = centre[1] - semi[1] * self.u(0.3, 0.95) if rng.random() < 0.4 else None
            content = self.u(150, 450) if oral and rng.random() < 0.6 else self.u(5, 45) + enhance * 20
            blob(f"bowel_{k}", centre, semi, Material(hu=content, texture=8, gas_level=gas),
                 yaw=self.u(0, np.pi))
        blob("bladder", (0, s1[1] - 70, s1[2] - 95), (self.u(30, 55), self.u(25, 40), self.u(25, 45)),
             Material(hu=self.u(0, 15)))
        # Vessels.
        aorta_r, ivc_r = self.u(9, 13), self.u(9, 12)
        l4 = lumbar[-2]
        aorta, ivc = [], []
        for v in thoracic[-3:] + lumbar[:-1]:
            anterior = -(v.depth / 2 + aorta_r + 3)
            aorta.append(v.frame.to_world((12, anterior, 0)))
            ivc.append(v.frame.to_world((-22, anterior + 4, 0)))
        bifurcation = l4.frame.to_world((5, -(l4.depth / 2 + aorta_r + 3), -l4.height / 2))
        soft.append(Tube("aorta", tuple(map(tuple, aorta + [bifurcation])), (aorta_r,) * (len(aorta) + 1),
                         Material(hu=blood, texture=3)))
        if rng.random() < 0.45:  # calcified plaques in the aortic and iliac walls
            for k in range(int(rng.integers(2, 15))):
                centre = aorta[int(rng.integers(len(aorta)))] + np.array([0, 0, self.u(-15, 15)])
                angle = self.u(0, 2 * np.pi)
                centre = centre + aorta_r * np.array([np.cos(angle), np.sin(angle), 0])
                blob(f"plaque_{k}", centre, (self.u(1, 3), self.u(1, 3), self.u(1.5, 5)),
                     Material(hu=self.u(300, 1000)))
        soft.append(Tube("ivc", tuple(map(tuple, ivc)), (ivc_r,) * len(ivc), Material(hu=0.7 * blood + 12, texture=3)))
        for side in (-1, 1):
            soft.append(Tube(f"iliac_{side}", (tuple(bifurcation), (side * 45, s1[1] - 35, s1[2] - 20),
                                               (side * 85, s1[1] - 60, s1[2] - 80)), (7, 6.5, 6),
                             Material(hu=blood, texture=3)))
        # Muscles: psoas, quadratus lumborum, erector spinae, gluteal and iliacus.
        for side in (-1, 1):
            points, radii = [], []
            for k, v in enumerate(lumbar):
                r = (7 + 18 * k / max(len(lumbar) - 1, 1)) * self.u(0.9, 1.15)
                points.append(v.frame.to_world((side * (v.width / 2 + r * 0.6), -v.depth * 0.05, 0)))
                radii.append(r)
            points += [np.array([side * 65, s1[1] - 45, s1[2] - 40]), np.array([side * 80, s1[1] - 75, s1[2] - 110])]
            radii += [radii[-1] * 0.9, 15]
            soft.append(Tube(f"psoas_{side}", tuple(map(tuple, points)), tuple(radii), muscle))
            ql = [v.frame.to_world((side * (v.width / 2 + 42), v.depth * 0.5 + 6, 0)) for v in [t12] + lumbar[:-1]]
            soft.append(Tube(f"quadratus_{side}", tuple(map(tuple, ql)), (6,) + (12,) * (len(ql) - 1), muscle))
            erector, eradii = [], []
            for v in self.vertebrae:
                r = (18 if v.thoracic else 24) * self.erector * self.u(0.95, 1.05)
                erector.append(v.frame.to_world((side * (14 + r), v.depth / 2 + 2 * v.canal[1] + 4 + r * 0.5, 0)))
                eradii.append(r)
            erector.append(self.sacrum[2].frame.to_world((side * 30, 40, 0)))
            eradii.append(12)
            soft.append(Tube(f"erector_{side}", tuple(map(tuple, erector)), tuple(eradii), muscle, aspect=0.8))
            blob(f"gluteus_{side}", (side * (inner_x * 0.75), body.back_y - body.fat * 0.8 - 50, s1[2] - 75),
                 (55, 45, 80), muscle,
                 yaw=side * 0.4)
            blob(f"iliacus_{side}", (side * 85, s1[1] - 30, s1[2] - 5), (30, 18, 45), muscle, yaw=-side * 0.7)
        return tuple(soft)

    # -- bones (unlabelled) ------------------------------------------------------------------------
    def _cage(self, v: Vertebra) -> tuple[float, float, float, float]:
        """Rib cage ellipse (centre x, centre y, semi-axes) whose back passes by the rib tubercles of ``v``."""
        body = self.body
        cage_a = body.half_width - body.fat - body.wall - 8
        cage_b = body.half_depth - body.fat - body.wall - 8
        tubercle = v.frame.to_world((v.width / 2 + 20, v.depth / 2 + 16, v.height * 0.05))
        psi0 = np.arcsin(min(0.9, abs(tubercle[0] - body.centre_x) / cage_a))
        return body.centre_x, float(tubercle[1] - cage_b * np.cos(psi0)), cage_a, cage_b

    def _inside_wall(self, point: np.ndarray) -> np.ndarray:
        """``point`` pulled radially inside the abdominal wall if it lies beyond."""
        body = self.body
        semi = np.array([body.half_width - body.fat - 6, body.half_depth - body.fat - 6])
        centre = np.array([body.centre_x, body.centre_y])
        out = point.copy()
        ratio = float(np.linalg.norm((point[:2] - centre) / semi))
        if ratio > 1:
            out[:2] = centre + (point[:2] - centre) / ratio
        out[1] = min(out[1], body.back_y - body.fat - 6)
        return out

    def _ribs(self) -> tuple:
        body = self.body
        ribs = []
        _, _, cage_a, cage_b = self._cage(self.vertebrae[0])
        for v in self.vertebrae:
            if max(v.ribs) <= 0:
                continue
            for side, length in zip((-1, 1), v.ribs):
                head = v.frame.to_world((side * (v.width / 2 - 1), v.depth * 0.25, v.height * 0.2))
                tubercle = v.frame.to_world((side * (v.width / 2 + 20), v.depth / 2 + 16, v.height * 0.05))
                points = [head, tubercle]
                travelled = float(np.linalg.norm(tubercle - head))
                psi0 = np.arcsin(min(0.9, abs(tubercle[0] - body.centre_x) / cage_a))
                cy = tubercle[1] - cage_b * np.cos(psi0)
                drop = self.u(0.15, 0.3)
                psi = psi0
                while travelled < length and psi < np.pi * 0.95:
                    psi += 0.15
                    point = np.array([body.centre_x + side * cage_a * np.sin(psi), cy + cage_b * np.cos(psi),
                                      tubercle[2] - drop * cage_a * (psi - psi0)])
                    step = float(np.linalg.norm(point - points[-1]))
                    if travelled + step > length:
                        point = points[-1] + (point - points[-1]) * (length - travelled) / step
                        step = length - travelled
                    points.append(self._inside_wall(point))
                    travelled += step
                radius = self.u(3.5, 4.5)
                marrow = Material(hu=self.u(150, 300), cortex=self.u(0.8, 1.5), cortical_hu=self.u(700, 1100))
                # Long ribs end anteriorly in costal cartilage (soft-tissue-like, unlabelled like the rib).
                bony = len(points) if length < 200 else max(3, int(len(points) * 0.75))
                ribs.append(Tube(f"rib_{v.label}_{side}", tuple(map(tuple, points[:bony])), (radius,) * bony, marrow))
                if bony < len(points):
                    cartilage = points[bony - 1:]
                    ribs.append(Tube(f"cartilage_{v.label}_{side}", tuple(map(tuple, cartilage)),
                                     (radius * 1.1,) * len(cartilage), Material(hu=self.u(90, 180), texture=10)))
        return tuple(ribs)

    def _pelvis(self, cortical: float, cancellous: float, cortex: float) -> tuple:
        s1 = self.sacrum[0].frame.origin
        bone = Material(hu=cancellous * 0.9, texture=25, cortex=cortex * 1.2, cortical_hu=cortical)
        dense = Material(hu=cancellous * 1.1 + 60, texture=25, cortex=cortex * 1.5, cortical_hu=cortical)
        width = self.u(0.9, 1.1)
        out = []
        for side in (-1, 1):
            def p(x, y, z):
                return np.array([s1[0] + side * x * width, s1[1] + y, s1[2] + z])

            joint = self.sacrum[1]
            si = joint.frame.to_world((side * (joint.width / 2 + joint.ala + 2.5), joint.depth * 0.3, joint.height / 2))
            semi = np.array([0.0, self.u(55, 70), self.u(110, 130)])
            lift = 25.0
            semi[0] = abs(si[0] - s1[0]) / np.sqrt(1 - 0.88 ** 2 - (lift / semi[2]) ** 2)
            centre = np.array([s1[0], si[1] - 0.88 * semi[1], si[2] + lift])
            out.append(IliacWing(f"ilium_{side}", float(side), tuple(centre), tuple(float(a) for a in semi),
                                 medial=float(abs(si[0] - s1[0]) + 0.5), front=-0.35 * semi[1],
                                 crest=lift + self.u(15, 30), bottom=-lift - self.u(45, 60), material=bone))
            psis = [si + np.array([side * 8, 10, 30]), si + np.array([side * 7, 12, -5]),
                    si + np.array([side * 10, 4, -40])]
            out.append(Tube(f"ilium_posterior_{side}", tuple(map(tuple, psis)), (9, 12, 12), bone))
            notch = si + np.array([side * 30, -35, -45])
            si = psis[-1]
            acetabulum, symphysis, tuber = p(92, -40, -85), p(12, -78, -105), p(55, -5, -130)
            out.append(Tube(f"ilium_body_{side}", (tuple(si), tuple(acetabulum)), (12, 20), bone))
            out.append(Tube(f"ilium_column_{side}", (tuple(notch), tuple(acetabulum)), (14, 20), bone))
            out.append(Tube(f"pubis_{side}", (tuple(acetabulum), tuple(symphysis)), (14, 9), bone))
            out.append(Tube(f"ischium_{side}", (tuple(acetabulum), tuple(tuber), tuple(symphysis + (0, 10, -10))),
                            (16, 13, 7), bone))
            head_r = self.u(21, 25)
            out.append(Blob(f"joint_{side}", Frame.make(acetabulum), (head_r + 2,) * 3, Material(hu=60)))
            out.append(Blob(f"femoral_head_{side}", Frame.make(acetabulum), (head_r,) * 3, dense))
            trochanter = acetabulum + np.array([side * 45, 8, -30])
            out.append(Tube(f"femur_{side}", (tuple(acetabulum), tuple(trochanter),
                                              tuple(trochanter + np.array([-side * 10, -5, -250]))),
                            (head_r * 0.75, 17, 14), dense))
        return tuple(out)

    def _lesions(self) -> tuple:
        """Metastases inside vertebral bodies: lytic (dark) or blastic (bright); labels unchanged."""
        blastic = self.rng.random() < 0.4
        out = []
        for k in range(int(self.rng.integers(1, 5))):
            v = self.vertebrae[int(self.rng.integers(len(self.vertebrae)))]
            radius = min(v.width, v.depth, v.height) * self.u(0.1, 0.3)
            centre = v.frame.to_world((self.u(-0.25, 0.25) * v.width, self.u(-0.25, 0.25) * v.depth,
                                       self.u(-0.2, 0.2) * v.height))
            hu = self.u(500, 1000) if blastic else self.u(-20, 60)
            out.append(Blob(f"lesion_{k}", Frame.make(centre), (radius, radius * self.u(0.7, 1.3), radius),
                            Material(hu=hu, texture=15)))
        return tuple(out)

    def _cement(self, v: Vertebra) -> Blob:
        """Vertebroplasty cement in a fractured body."""
        return Blob(f"cement_{v.label}", v.frame, (v.width * self.u(0.2, 0.35), v.depth * self.u(0.2, 0.35),
                                                   v.height * self.u(0.15, 0.3)), Material(hu=self.u(1500, 2600)))

    def _screws(self) -> tuple:
        rng = self.rng
        lumbar = [v for v in self.vertebrae if not v.thoracic]
        count = int(rng.integers(1, 4))
        start = int(rng.integers(0, len(lumbar) - count + 1))
        metal = Material(hu=3000.0)
        heads = {-1: [], 1: []}
        out = []
        for v in lumbar[start:start + count]:
            for side in (-1, 1):
                px = v.canal[0] + v.pedicle
                entry = v.frame.to_world((side * (px + 3), v.depth / 2 + 2 * v.canal[1] + 2, v.height * 0.1))
                tip = v.frame.to_world((side * px * 0.3, -v.depth * 0.3, v.height * 0.1))
                axis = (entry - tip) / np.linalg.norm(entry - tip)
                head = entry + axis * 12
                out.append(Tube(f"screw_{v.label}_{side}", (tuple(tip), tuple(head)), (3.0, 3.2), metal))
                out.append(Blob(f"tulip_{v.label}_{side}", Frame.make(head), (6, 6, 6), metal))
                heads[side].append(head)
        if count > 1:
            for side in (-1, 1):
                pts = heads[side]
                out.append(Tube(f"rod_{side}", tuple(map(tuple, pts)), (2.75,) * len(pts), metal))
        return tuple(out)
