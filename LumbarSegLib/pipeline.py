"""The segmentation pipeline, stage by stage: read, normalise, localize, segment,
post-process, restore (with the cortical rim on the input grid), write.

``segment_ct`` turns a CT image into a label map on the input grid plus a
report; ``run_segment`` adds reading the input and writing every output
atomically. The stages read top to bottom; each is a module of its own.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from LumbarSegLib import __version__, geometry
from LumbarSegLib.atomic import OutputTransaction
from LumbarSegLib.boundary import extend_to_cortical_rim
from LumbarSegLib.errors import NoSpineError
from LumbarSegLib.inference import autocast_dtype, prepare_network, select_device
from LumbarSegLib.io import output_stem, read_ct
from LumbarSegLib.labels import LUMBAR_CLASSES, VERSE_OF_OUTPUT_CLASS, lookup_table
from LumbarSegLib.localize import lumbar_probability, spine_box
from LumbarSegLib.measurements import vertebra_measurements
from LumbarSegLib.models import LOCALIZER_FILE, XUNET_FILE, ModelSpec, load_network
from LumbarSegLib.postprocess import Finding, clean
from LumbarSegLib.progress import Progress
from LumbarSegLib.segment import segment_spine
from LumbarSegLib.transitional import transitional_findings

OUTPUT_LOOKUP = lookup_table(VERSE_OF_OUTPUT_CLASS)


@dataclass
class Models:
    """The two networks with their specs, prepared for one device."""

    localizer: torch.nn.Module
    localizer_spec: ModelSpec
    xunet: torch.nn.Module
    xunet_spec: ModelSpec
    device: torch.device

    @classmethod
    def load(cls, device: torch.device, *, localizer: Path | None = None, xunet: Path | None = None) -> "Models":
        """The bundled networks, or the given model files."""
        localizer, localizer_spec = load_network(LOCALIZER_FILE, localizer)
        xunet, xunet_spec = load_network(XUNET_FILE, xunet)
        return cls(prepare_network(localizer, device), localizer_spec, prepare_network(xunet, device), xunet_spec,
                   device)


@dataclass
class SegmentOptions:
    """Options of one ``segment`` run (the CLI's flags)."""

    device: str = "auto"
    threads: int | None = None
    mesh: str | None = None
    preview: bool = False
    overwrite: bool = False


@dataclass
class SegmentationResult:
    labels: sitk.Image
    report: dict
    findings: list[Finding] = field(default_factory=list)


class StageTimer:
    """Wall time per stage, in seconds."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._start = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = round(self.seconds.get(stage, 0.0) + now - self._start, 3)
        self._start = now


def set_threads(threads: int | None) -> None:
    """Honour a thread count in torch and SimpleITK (default: all cores)."""
    count = threads or os.cpu_count() or 1
    torch.set_num_threads(count)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(count)


def restore_to_input(probabilities: np.ndarray, crop: sitk.Image, ct: sitk.Image) -> np.ndarray:
    """Output values on the CT's grid: the restored argmax, each vertebra with its cortical rim."""
    hu = sitk.GetArrayViewFromImage(ct)
    return geometry.restore_labels(
        probabilities, crop, ct, values=OUTPUT_LOOKUP,
        refine=lambda classes, where: extend_to_cortical_rim(classes, hu[where], growing=LUMBAR_CLASSES),
    )


def segment_ct(ct: sitk.Image, models: Models, *, progress: Progress, timer: StageTimer) -> SegmentationResult:
    """Segment L1..L5 (L6) in a CT image; the label map lies on the CT's exact grid."""
    progress.stage("normalise")
    probability, coarse = lumbar_probability(
        ct, models.localizer, models.localizer_spec, device=models.device,
        on_window=lambda done, total: progress.stage("localize", done / total),
    )
    box = spine_box(probability, coarse)
    timer.lap("localize")

    probabilities, crop, crop_hu = segment_spine(
        ct, box, models.xunet, models.xunet_spec, device=models.device,
        on_window=lambda done, total: progress.stage("segment", done / total),
    )
    timer.lap("segment")

    progress.stage("postprocess")
    cleaned = clean(probabilities, hu=crop_hu, spacing_mm=models.xunet_spec.spacing_mm,
                    origin_z_mm=crop.GetOrigin()[2])
    if any(f.code == "no_lumbar_vertebra" for f in cleaned.findings):
        raise NoSpineError("the spine was located but no lumbar vertebra was recognised in it")
    transitional = transitional_findings(cleaned.labels, crop_hu, geometry.covered_by(crop, ct),
                                         spacing_mm=models.xunet_spec.spacing_mm)
    timer.lap("postprocess")

    progress.stage("restore")
    labels = geometry.array_to_image(restore_to_input(probabilities, crop, ct), ct)
    timer.lap("restore")

    crop_box = geometry.physical_box(crop)
    measurements = vertebra_measurements(ct, labels)
    if not measurements:
        raise NoSpineError("no lumbar vertebra was found in the field of view")
    findings = cleaned.findings + transitional + [
        Finding("touches_fov_border", f"{name} touches the edge of the field of view: it may be cut off", name)
        for name, values in measurements.items() if values["touches_fov_border"]
    ]
    for name, values in measurements.items():
        level = cleaned.levels.get(name)
        values["confidence"] = None if level is None else round(level.confidence, 3)
    report = {
        "lumbarseg_version": __version__,
        "models": {
            "localizer": models.localizer_spec.version,
            "xunet": models.xunet_spec.version,
            "segmentation_spacing_mm": models.xunet_spec.spacing_mm,
        },
        "device": models.device.type,
        "precision": str(autocast_dtype(models.device) or torch.float32).replace("torch.", ""),
        "crop_box_lps_mm": {"min": crop_box.lower.round(1).tolist(), "max": crop_box.upper.round(1).tolist()},
        "vertebrae": measurements,
        "flags": [f.as_dict() for f in findings],
    }
    return SegmentationResult(labels=labels, report=report, findings=findings)


def output_names(stem: str, options: SegmentOptions) -> dict[str, str]:
    """File names of every output one run writes."""
    names = {
        "labels": f"{stem}_seg.nii.gz",
        "segmentation": f"{stem}.seg.nrrd",
        "report": f"{stem}_report.json",
    }
    if options.mesh:
        names["meshes"] = f"{stem}_meshes"
    if options.preview:
        names["preview"] = f"{stem}_preview.png"
    return names


def input_summary(path: Path, ct: sitk.Image) -> dict:
    return {
        "path": str(path),
        "size": list(ct.GetSize()),
        "spacing_mm": [round(s, 4) for s in ct.GetSpacing()],
        "origin_lps_mm": [round(o, 3) for o in ct.GetOrigin()],
        "direction": [round(d, 6) for d in ct.GetDirection()],
    }


def run_segment(input_path: Path, outdir: Path, options: SegmentOptions, *, progress: Progress,
                models: Models | None = None) -> tuple[dict[str, Path], SegmentationResult]:
    """Read a CT, segment it and write every output atomically into ``outdir``.

    Returns the final output paths and the result. Outputs already present are
    refused before any work unless ``options.overwrite``.
    """
    from LumbarSegLib import seg_nrrd
    from LumbarSegLib.mesh import write_meshes
    from LumbarSegLib.preview import write_preview

    timer = StageTimer()
    names = output_names(output_stem(input_path), options)
    with OutputTransaction(outdir, overwrite=options.overwrite) as outputs:
        outputs.check_free(names.values())
        set_threads(options.threads)
        progress.stage("read")
        ct = read_ct(input_path)
        timer.lap("read")
        models = models or Models.load(select_device(options.device))
        timer.lap("load_models")
        result = segment_ct(ct, models, progress=progress, timer=timer)

        progress.stage("write")
        sitk.WriteImage(result.labels, str(outputs.path(names["labels"])), useCompression=True, imageIO="NiftiImageIO")
        seg_nrrd.write_seg_nrrd(result.labels, outputs.path(names["segmentation"]))
        if options.mesh:
            mesh_dir = outputs.path(names["meshes"])
            mesh_dir.mkdir()
            write_meshes(result.labels, mesh_dir, fmt=options.mesh)
        if options.preview:
            write_preview(ct, result.labels, outputs.path(names["preview"]))
        timer.lap("write")
        result.report["input"] = input_summary(input_path, ct)
        result.report["timings_s"] = {**timer.seconds, "total": round(sum(timer.seconds.values()), 3)}
        outputs.path(names["report"]).write_text(json.dumps(result.report, indent=2) + "\n")
    progress.done()
    return {key: outdir / name for key, name in names.items()}, result
