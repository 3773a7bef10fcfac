"""Read a CT volume (NIfTI, NRRD, MetaImage or a DICOM series folder) and check it is a CT we can segment.

Every rejection is an :class:`InputError` (or :class:`ResourceLimitError` for memory) with one line that
names the input; ``docs/INPUTS.md`` lists them all. Inputs are only ever opened for reading.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import struct
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence, Union

import numpy as np
import SimpleITK as sitk

from LumbarSegLib.errors import InputError, ResourceLimitError

PathLike = Union[str, "os.PathLike[str]"]

# Suffix -> (ITK ImageIO, format name shown to the user). Longest suffix first.
FILE_FORMATS = {
    ".nii.gz": ("NiftiImageIO", "NIfTI"),
    ".nii": ("NiftiImageIO", "NIfTI"),
    ".nrrd": ("NrrdImageIO", "NRRD"),
    ".mha": ("MetaImageIO", "MetaImage"),
    ".mhd": ("MetaImageIO", "MetaImage"),
}
MIN_SLICES = 8
MIN_SPACING_MM = 0.1
MAX_SPACING_MM = 20.0
ORTHONORMAL_TOLERANCE = 1e-3
# A DICOM slice may sit this fraction of a voxel away from the regular grid ITK builds from the series.
DICOM_GRID_TOLERANCE = 0.25
# Every body CT has fat (about -100 HU) or air in view, even a tight crop around the spine;
# MR magnitudes and CT stored without its rescale intercept are all >= 0.
FAT_HU = -50.0
BONE_HU = 200.0
MIN_BONE_FRACTION = 1e-4
MIN_INTENSITY_RANGE = 100.0
# The pipeline holds the input plus about this many float32 copies of it (normalised, resampled, probabilities).
PIPELINE_FLOAT32_COPIES = 3
MEMORY_LIMIT_ENV = "LUMBARSEG_MEMORY_LIMIT_BYTES"

_SCALAR_PIXEL_BYTES = {
    sitk.sitkInt16: 2,
    sitk.sitkUInt16: 2,
    sitk.sitkInt32: 4,
    sitk.sitkUInt32: 4,
    sitk.sitkInt64: 8,
    sitk.sitkUInt64: 8,
    sitk.sitkFloat32: 4,
    sitk.sitkFloat64: 8,
}
_EIGHT_BIT = {sitk.sitkInt8, sitk.sitkUInt8, sitk.sitkVectorInt8, sitk.sitkVectorUInt8}
_OTHER_PIXEL_BYTES = {
    sitk.sitkInt8: 1,
    sitk.sitkUInt8: 1,
    sitk.sitkVectorInt8: 1,
    sitk.sitkVectorUInt8: 1,
    sitk.sitkVectorInt16: 2,
    sitk.sitkVectorUInt16: 2,
    sitk.sitkVectorInt32: 4,
    sitk.sitkVectorUInt32: 4,
    sitk.sitkVectorInt64: 8,
    sitk.sitkVectorUInt64: 8,
    sitk.sitkVectorFloat32: 4,
    sitk.sitkVectorFloat64: 8,
    sitk.sitkComplexFloat32: 8,
    sitk.sitkComplexFloat64: 16,
}
_AXES = ("x (i)", "y (j)", "z (k)")
_SLAB_VOXELS = 1 << 24


@dataclass(frozen=True)
class ImageHeader:
    """Geometry and voxel type of an image, known before its pixels are loaded."""

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    pixel_id: int
    components: int

    @classmethod
    def from_reader(cls, reader: sitk.ImageFileReader) -> ImageHeader:
        """Header of a reader on which ``ReadImageInformation`` has run."""
        return cls(
            tuple(reader.GetSize()),
            tuple(reader.GetSpacing()),
            tuple(reader.GetOrigin()),
            tuple(reader.GetDirection()),
            reader.GetPixelID(),
            reader.GetNumberOfComponents(),
        )

    @classmethod
    def from_image(cls, image: sitk.Image) -> ImageHeader:
        """Header of a loaded image."""
        return cls(
            tuple(image.GetSize()),
            tuple(image.GetSpacing()),
            tuple(image.GetOrigin()),
            tuple(image.GetDirection()),
            image.GetPixelID(),
            image.GetNumberOfComponentsPerPixel(),
        )

    @property
    def dimension(self) -> int:
        return len(self.size)

    @property
    def voxels(self) -> int:
        return math.prod(self.size)

    def spatial(self) -> ImageHeader:
        """The first three axes of an image whose further axes all have size 1."""
        d = self.dimension
        direction = tuple(self.direction[r * d + c] for r in range(3) for c in range(3))
        return ImageHeader(self.size[:3], self.spacing[:3], self.origin[:3], direction, self.pixel_id, self.components)


def output_stem(path: PathLike) -> str:
    """Return the output name of an input: the file name without its image suffix, or the DICOM folder's name."""
    p = Path(path)
    if p.is_dir():
        return p.resolve().name
    name = p.name
    for suffix in FILE_FORMATS:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def read_ct(path: PathLike) -> sitk.Image:
    """Read and validate a CT volume; return it in its own pixel type with its geometry unchanged.

    Args:
        path: a ``.nii``, ``.nii.gz``, ``.nrrd``, ``.mha`` or ``.mhd`` file, or a folder holding a DICOM
            series (the series with the most slices is read).

    Raises:
        InputError: the input is missing, unreadable or not a 3D CT volume we can segment.
        ResourceLimitError: segmenting it would not fit in the available memory (checked before loading).
    """
    p = Path(path)
    shown = os.fspath(path)
    if not p.exists():
        raise InputError(f"{shown}: no such file or folder")
    if not os.access(p, os.R_OK):
        raise InputError(f"{shown}: permission denied (cannot open it for reading)")
    image = _read_dicom_folder(p, shown) if p.is_dir() else _read_file(p, shown)
    _check_header(ImageHeader.from_image(image), shown)
    _check_intensities(image, shown)
    return image


def estimate_memory_bytes(image_or_header: sitk.Image | sitk.ImageFileReader | ImageHeader) -> int:
    """Estimate the peak memory of segmenting an image: the input plus the pipeline's float32 copies."""
    header = _as_header(image_or_header)
    input_bytes = header.voxels * max(header.components, 1) * _pixel_bytes(header.pixel_id)
    return input_bytes + PIPELINE_FLOAT32_COPIES * header.voxels * 4


def available_memory_bytes() -> int | None:
    """Memory available to this job: ``LUMBARSEG_MEMORY_LIMIT_BYTES``, else psutil, else ``/proc/meminfo``."""
    override = os.environ.get(MEMORY_LIMIT_ENV)
    if override:
        return int(override)
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        return int(psutil.virtual_memory().available)
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(image_or_header: sitk.Image | sitk.ImageFileReader | ImageHeader, name: str) -> None:
    """Raise :class:`ResourceLimitError` if segmenting the image would need more than the available memory."""
    header = _as_header(image_or_header)
    needed = estimate_memory_bytes(header)
    available = available_memory_bytes()
    if available is not None and needed > available:
        size = " x ".join(str(n) for n in header.size)
        raise ResourceLimitError(
            f"{name}: segmenting this {size} volume needs about {needed / 2**30:.1f} GiB of memory "
            f"but only {available / 2**30:.1f} GiB is available"
        )


def _as_header(value: sitk.Image | sitk.ImageFileReader | ImageHeader) -> ImageHeader:
    if isinstance(value, ImageHeader):
        return value
    if isinstance(value, sitk.Image):
        return ImageHeader.from_image(value)
    return ImageHeader.from_reader(value)


def _pixel_bytes(pixel_id: int) -> int:
    return _SCALAR_PIXEL_BYTES.get(pixel_id) or _OTHER_PIXEL_BYTES.get(pixel_id, 8)


@contextlib.contextmanager
def _quiet_itk() -> Iterator[None]:
    """Silence ITK warnings and the native libraries (MetaIO, GDCM, NIfTI) that print to stderr themselves."""
    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    saved_fd = None
    try:
        sys.stderr.flush()
        saved_fd = os.dup(2)
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
    except (OSError, ValueError, AttributeError):
        saved_fd = None  # no usable stderr descriptor (embedded interpreter): ITK's own switch must do
    try:
        yield
    finally:
        if saved_fd is not None:
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)


def _file_format(p: Path, shown: str) -> tuple[str, str]:
    name = p.name.lower()
    for suffix, io_and_name in FILE_FORMATS.items():
        if name.endswith(suffix):
            return io_and_name
    if name.endswith((".dcm", ".ima")):
        raise InputError(f"{shown}: a single DICOM file; give the folder that holds the whole series")
    suffix = "".join(p.suffixes[-2:]) or "(none)"
    raise InputError(
        f"{shown}: unsupported file type '{suffix}'; give a NIfTI (.nii, .nii.gz), NRRD (.nrrd) "
        "or MetaImage (.mha, .mhd) file, or a DICOM series folder"
    )


def _read_file(p: Path, shown: str) -> sitk.Image:
    image_io, format_name = _file_format(p, shown)
    if p.stat().st_size == 0:
        raise InputError(f"{shown}: the file is empty (0 bytes)")
    nifti = _check_nifti_header(p, shown) if image_io == "NiftiImageIO" else None
    if image_io == "MetaImageIO":
        _check_metaimage_header(p, shown)
    reader = sitk.ImageFileReader()
    reader.SetFileName(os.fspath(p))
    reader.SetImageIO(image_io)
    with _quiet_itk():
        try:
            reader.ReadImageInformation()
        except RuntimeError as error:
            raise _read_error(error, shown, format_name) from None
    header = ImageHeader.from_reader(reader)
    _check_header(header, shown)
    check_memory(header, shown)
    with ThreadPoolExecutor(max_workers=1) as pool:
        # The length check decompresses the whole file; zlib and ITK both release the GIL, so it
        # runs beside ITK's own read (a truncated file only yields zeros there, never a crash).
        length_check = pool.submit(_check_nifti_length, p, nifti, shown) if nifti is not None else None
        image, read_error = None, None
        with _quiet_itk():
            try:
                image = reader.Execute()
            except RuntimeError as error:
                read_error = error
        if length_check is not None:
            length_check.result()
    if read_error is not None:
        raise _read_error(read_error, shown, format_name) from None
    if image.GetDimension() > 3:
        image = sitk.Extract(
            image,
            list(image.GetSize()[:3]) + [0] * (image.GetDimension() - 3),
            [0] * image.GetDimension(),
            sitk.ExtractImageFilter.DIRECTIONCOLLAPSETOSUBMATRIX,
        )
    return image


def _read_error(error: RuntimeError, shown: str, format_name: str) -> InputError:
    if "orthonormal" in str(error):
        return InputError(_non_orthogonal_message(shown))
    return InputError(f"{shown}: cannot read this {format_name} file: it is corrupt or truncated")


# --- header guards: values that make ITK's readers hang, crash or silently guess ------------------------------


@dataclass(frozen=True)
class _NiftiHeader:
    dim: tuple[int, ...]  # dim[0..7]
    bitpix: int
    pixdim: tuple[float, ...]  # pixdim[0..7]
    vox_offset: float
    transforms: tuple[float, ...]  # quatern_b..qoffset_z, srow_x, srow_y, srow_z


def _parse_nifti_header(head: bytes) -> _NiftiHeader | None:
    """Decode the few NIfTI-1/-2 fields the guards need, in either byte order."""
    for endian in "<>":
        if len(head) >= 348 and struct.unpack_from(endian + "i", head)[0] == 348:
            return _NiftiHeader(
                dim=struct.unpack_from(endian + "8h", head, 40),
                bitpix=struct.unpack_from(endian + "h", head, 72)[0],
                pixdim=struct.unpack_from(endian + "8f", head, 76),
                vox_offset=struct.unpack_from(endian + "f", head, 108)[0],
                transforms=struct.unpack_from(endian + "18f", head, 256),
            )
        if len(head) >= 540 and struct.unpack_from(endian + "i", head)[0] == 540:
            return _NiftiHeader(
                dim=struct.unpack_from(endian + "8q", head, 16),
                bitpix=struct.unpack_from(endian + "h", head, 14)[0],
                pixdim=struct.unpack_from(endian + "8d", head, 104),
                vox_offset=float(struct.unpack_from(endian + "q", head, 168)[0]),
                transforms=struct.unpack_from(endian + "18d", head, 352),
            )
    return None


def _check_nifti_header(p: Path, shown: str) -> _NiftiHeader:
    """Guard ITK's NIfTI reader: it hangs on non-finite transforms and replaces a zero pixdim by 1 mm."""
    opener = gzip.open if p.name.lower().endswith(".gz") else open
    try:
        with opener(p, "rb") as stream:
            header = _parse_nifti_header(stream.read(540))
    except (OSError, EOFError, zlib.error):
        raise InputError(f"{shown}: the compressed NIfTI data is corrupt or truncated") from None
    if header is None or not 1 <= header.dim[0] <= 7 or min(header.dim[1 : header.dim[0] + 1]) < 0:
        raise InputError(f"{shown}: cannot read this NIfTI file: it is corrupt or truncated")
    if not all(math.isfinite(v) for v in header.transforms + header.pixdim[:4] + (header.vox_offset,)):
        raise InputError(f"{shown}: the NIfTI header holds geometry values that are not finite numbers: it is broken")
    _check_spacing(header.pixdim[1 : 1 + min(header.dim[0], 3)], shown)
    return header


def _check_nifti_length(p: Path, header: _NiftiHeader, shown: str) -> None:
    """ITK reads a truncated NIfTI without complaint (the missing voxels come out as zeros)."""
    voxels = math.prod(header.dim[1 : header.dim[0] + 1])
    expected = int(header.vox_offset) + voxels * max(header.bitpix, 0) // 8
    actual = _nifti_byte_count(p, shown)
    if actual < expected:
        raise InputError(
            f"{shown}: the NIfTI file is truncated: it holds {actual} of the {expected} bytes its header announces"
        )


def _nifti_byte_count(p: Path, shown: str) -> int:
    """Length of the (decompressed) NIfTI stream; decompressing also verifies the gzip checksum."""
    if not p.name.lower().endswith(".gz"):
        return p.stat().st_size
    total = 0
    try:
        with gzip.open(p, "rb") as stream:
            while True:
                chunk = stream.read(1 << 22)
                if not chunk:
                    return total
                total += len(chunk)
    except (OSError, EOFError, zlib.error):
        raise InputError(f"{shown}: the compressed NIfTI data is corrupt or truncated") from None


_META_MAX_DIMS = 7
_META_INTEGER_KEYS = {"ndims", "dimsize", "elementnumberofchannels", "headersize"}
_META_REAL_KEYS = {"elementspacing", "elementsize", "offset", "position", "origin", "transformmatrix", "rotation",
                   "orientation", "centerofrotation", "elementmin", "elementmax"}


def _check_metaimage_header(p: Path, shown: str) -> None:
    """Guard ITK's MetaImage reader, which crashes on some impossible values (e.g. ``NDims = 1e308``)."""
    with open(p, "rb") as stream:
        head = stream.read(1 << 16)
    fields: dict[str, list[bytes]] = {}
    for line in head.split(b"\n"):
        key, separator, value = line.partition(b"=")
        name = key.strip().decode("latin-1").lower()
        if separator:
            fields[name] = value.split()
        if name == "elementdatafile":
            break
    try:
        integers = {k: [int(v) for v in fields[k]] for k in _META_INTEGER_KEYS if k in fields}
        reals = [float(v) for k in _META_REAL_KEYS if k in fields for v in fields[k]]
    except ValueError:
        integers, reals = {}, [math.nan]
    ndims = integers.get("ndims", [0])
    dim_size = integers.get("dimsize", [])
    if (
        len(ndims) != 1
        or not 1 <= ndims[0] <= _META_MAX_DIMS
        or len(dim_size) != ndims[0]
        or min(dim_size) < 0
        or not 1 <= (integers.get("elementnumberofchannels", [1]) or [0])[0] <= 1 << 16
        or not all(math.isfinite(v) for v in reals)
    ):
        raise InputError(f"{shown}: cannot read this MetaImage file: its header is corrupt")


def _check_header(header: ImageHeader, shown: str) -> None:
    """Reject anything that is not one scalar 3D volume on a sane, orthogonal grid."""
    if header.components != 1:
        raise InputError(
            f"{shown}: a multi-component image ({header.components} values per voxel, e.g. RGB colour), "
            "not a greyscale CT volume"
        )
    if header.dimension < 3:
        size = " x ".join(str(n) for n in header.size)
        raise InputError(f"{shown}: a {header.dimension}D image ({size}), not a 3D CT volume")
    if header.dimension > 3:
        if any(n != 1 for n in header.size[3:]):
            raise InputError(
                f"{shown}: a {header.dimension}D image (e.g. a time series), not a single 3D CT volume"
            )
        header = header.spatial()
    if header.pixel_id in _EIGHT_BIT:
        raise InputError(
            f"{shown}: an 8-bit image (a screenshot or a label map?), not a CT volume in Hounsfield units"
        )
    if header.pixel_id not in _SCALAR_PIXEL_BYTES:
        raise InputError(
            f"{shown}: unsupported voxel type ({sitk.GetPixelIDValueAsString(header.pixel_id)}); "
            "CT must be stored as integer or real numbers"
        )
    _check_size(header, shown)
    _check_spacing(header.spacing, shown)
    if not all(math.isfinite(v) for v in header.origin):
        raise InputError(f"{shown}: the image origin is not a finite number: the header is broken")
    if not _is_orthonormal(header.direction):
        raise InputError(_non_orthogonal_message(shown))


def _check_size(header: ImageHeader, shown: str) -> None:
    if header.voxels == 0:
        size = " x ".join(str(n) for n in header.size)
        raise InputError(f"{shown}: the volume is empty (size {size})")
    thinnest = int(np.argmin(header.size))
    if header.size[thinnest] == 1:
        raise InputError(
            f"{shown}: a single slice, not a volume; LumbarSeg needs a 3D CT with at least "
            f"{MIN_SLICES} slices in every direction"
        )
    if header.size[thinnest] < MIN_SLICES:
        raise InputError(
            f"{shown}: only {header.size[thinnest]} slices along the {_AXES[thinnest]} axis; LumbarSeg needs "
            f"a 3D CT with at least {MIN_SLICES} slices in every direction"
        )


def _check_spacing(spacing: Sequence[float], shown: str) -> None:
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise InputError(
            f"{shown}: voxel spacing {_format_numbers(spacing)} mm is zero, negative or not a number: "
            "the header is broken"
        )
    if not all(MIN_SPACING_MM <= s <= MAX_SPACING_MM for s in spacing):
        raise InputError(
            f"{shown}: voxel spacing {_format_numbers(spacing)} mm is outside the usable range "
            f"{MIN_SPACING_MM:g} to {MAX_SPACING_MM:g} mm"
        )


def _is_orthonormal(direction: Sequence[float]) -> bool:
    matrix = np.asarray(direction, dtype=float).reshape(3, 3)
    if not np.all(np.isfinite(matrix)):
        return False
    return float(np.abs(matrix.T @ matrix - np.eye(3)).max()) < ORTHONORMAL_TOLERANCE


def _non_orthogonal_message(shown: str) -> str:
    return (
        f"{shown}: the direction matrix is not orthogonal (sheared or degenerate axes); "
        "resample the volume to an orthogonal grid first"
    )


def _format_numbers(values: Sequence[float]) -> str:
    return " x ".join(f"{v:g}" for v in values)


def _check_intensities(image: sitk.Image, shown: str) -> None:
    """Reject NaN/inf, constant, normalised, MR-like (no fat or air) and bone-free volumes."""
    array = sitk.GetArrayViewFromImage(image)  # a view: `image` must stay alive while it is used
    low, high = float(array.min()), float(array.max())
    if not (math.isfinite(low) and math.isfinite(high)):
        raise InputError(f"{shown}: the volume contains NaN or infinite values")
    if low == high:
        raise InputError(f"{shown}: every voxel has the same value ({low:g}): the volume holds no image")
    if high - low < MIN_INTENSITY_RANGE:
        raise InputError(
            f"{shown}: intensities only span {low:g} to {high:g}: the volume looks normalised or rescaled, "
            "not CT in Hounsfield units"
        )
    if low >= FAT_HU:
        raise InputError(
            f"{shown}: no voxel is below {FAT_HU:g} HU (no fat or air): this is not CT in Hounsfield units "
            "(an MR image, or CT stored without its rescale intercept?)"
        )
    if _fraction_above(array, BONE_HU) < MIN_BONE_FRACTION:
        raise InputError(
            f"{shown}: almost no voxel is above {BONE_HU:g} HU (no bone): LumbarSeg needs a CT that shows the spine"
        )


def _fraction_above(array: np.ndarray, threshold: float) -> float:
    """Fraction of voxels above a threshold, counted in slabs so no full-size mask is allocated."""
    step = max(1, _SLAB_VOXELS // max(1, array[0].size))
    count = sum(int(np.count_nonzero(array[z : z + step] > threshold)) for z in range(0, array.shape[0], step))
    return count / array.size


# --- DICOM -------------------------------------------------------------------------------------------------


_PIXEL_DATA_TAGS = (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10")  # (7FE0,0010) little and big endian
_SAME_POSITION_MM = 1e-3


@dataclass(frozen=True)
class _DicomSlice:
    file: str
    position: np.ndarray
    row: np.ndarray
    column: np.ndarray
    size: tuple[int, ...]
    spacing: tuple[float, ...]
    pixel_id: int
    modality: str


def _read_dicom_folder(p: Path, shown: str) -> sitk.Image:
    with _quiet_itk():
        try:
            series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(os.fspath(p))
            files_per_series = [sitk.ImageSeriesReader.GetGDCMSeriesFileNames(os.fspath(p), s) for s in series]
        except RuntimeError:
            files_per_series = []
    if not files_per_series:
        has_subfolders = any(child.is_dir() for child in p.iterdir())
        raise InputError(
            f"{shown}: the folder holds no DICOM series" + (" (sub-folders are not searched)" if has_subfolders else "")
        )
    _check_unlisted_dicom_files(p, {os.path.normpath(f) for files in files_per_series for f in files}, shown)
    files = list(max(files_per_series, key=len))
    slices = [_read_dicom_slice(f, shown) for f in files]
    modality = slices[0].modality
    if modality and modality != "CT":
        raise InputError(f"{shown}: the DICOM series is {modality}, not CT")
    if len(slices) == 1:
        return _read_single_dicom(files[0], shown)
    ordered = _order_dicom_slices(slices, shown)
    first, normal = ordered[0], np.cross(ordered[0].row, ordered[0].column)
    step = float((ordered[-1].position - first.position) @ normal) / (len(ordered) - 1)
    header = ImageHeader(
        first.size[:2] + (len(ordered),),
        first.spacing[:2] + (step,),
        tuple(first.position),
        tuple(np.column_stack([first.row, first.column, normal]).ravel()),
        max((s.pixel_id for s in ordered), key=_pixel_bytes),
        1,
    )
    _check_header(header, shown)
    check_memory(header, shown)
    reader = sitk.ImageSeriesReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileNames([s.file for s in ordered])
    with _quiet_itk():
        try:
            return reader.Execute()
        except RuntimeError:
            raise InputError(f"{shown}: cannot read the DICOM series: a slice is corrupt or truncated") from None


def _check_unlisted_dicom_files(p: Path, listed: set[str], shown: str) -> None:
    """GDCM silently leaves out DICOM files it cannot parse; a truncated slice must not vanish unnoticed.

    Only files with the DICOM preamble and a Pixel Data element count: non-image objects in the folder
    (dose reports, presentation states, DICOMDIR) are left out by GDCM on purpose.
    """
    for child in sorted(p.iterdir()):
        if not child.is_file() or os.path.normpath(child) in listed:
            continue
        with open(child, "rb") as stream:
            if stream.read(132)[128:] != b"DICM":
                continue
            if not any(tag in stream.read() for tag in _PIXEL_DATA_TAGS):
                continue
        reader = sitk.ImageFileReader()
        reader.SetFileName(os.fspath(child))
        reader.SetImageIO("GDCMImageIO")
        with _quiet_itk():
            try:
                reader.ReadImageInformation()
            except RuntimeError:
                raise InputError(f"{shown}: DICOM file {child.name} is corrupt or truncated") from None


def _read_dicom_slice(file: str, shown: str) -> _DicomSlice:
    reader = sitk.ImageFileReader()
    reader.SetFileName(file)
    reader.SetImageIO("GDCMImageIO")
    with _quiet_itk():
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            raise InputError(f"{shown}: DICOM file {Path(file).name} is corrupt or truncated") from None
    tags = {key: reader.GetMetaData(key).strip() for key in ("0020|0032", "0020|0037", "0008|0060")
            if reader.HasMetaDataKey(key)}
    try:
        position = np.array([float(v) for v in tags["0020|0032"].split("\\")])
        orientation = np.array([float(v) for v in tags["0020|0037"].split("\\")])
        valid = position.shape == (3,) and orientation.shape == (6,) and np.all(np.isfinite(orientation))
    except (KeyError, ValueError):
        valid = False
    if not valid:
        position, orientation = np.full(3, np.nan), np.full(6, np.nan)
    return _DicomSlice(
        file=file,
        position=position,
        row=orientation[:3],
        column=orientation[3:],
        size=tuple(reader.GetSize()),
        spacing=tuple(reader.GetSpacing()),
        pixel_id=reader.GetPixelID(),
        modality=tags.get("0008|0060", "").upper(),
    )


def _read_single_dicom(file: str, shown: str) -> sitk.Image:
    """A one-file series: an enhanced (multi-frame) volume, or a single slice that the header check rejects."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(file)
    reader.SetImageIO("GDCMImageIO")
    with _quiet_itk():
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            raise InputError(f"{shown}: DICOM file {Path(file).name} is corrupt or truncated") from None
    header = ImageHeader.from_reader(reader)
    _check_header(header, shown)
    check_memory(header, shown)
    with _quiet_itk():
        try:
            return reader.Execute()
        except RuntimeError:
            raise InputError(f"{shown}: DICOM file {Path(file).name} is corrupt or truncated") from None


def _order_dicom_slices(slices: list[_DicomSlice], shown: str) -> list[_DicomSlice]:
    """Sort slices along the slice normal and check they form one regular, orthogonal (untilted) grid."""
    missing = next((s for s in slices if not np.all(np.isfinite(s.position))), None)
    if missing is not None:
        raise InputError(
            f"{shown}: DICOM file {Path(missing.file).name} has no valid image position/orientation; "
            "the slices cannot be ordered"
        )
    first = slices[0]
    if any(
        s.size != first.size
        or not np.allclose(s.row, first.row, atol=1e-4)
        or not np.allclose(s.column, first.column, atol=1e-4)
        for s in slices
    ):
        raise InputError(f"{shown}: the slices of the DICOM series differ in orientation or size")
    if not _is_orthonormal(np.column_stack([first.row, first.column, np.cross(first.row, first.column)]).ravel()):
        raise InputError(_non_orthogonal_message(shown))
    normal = np.cross(first.row, first.column)
    ordered = sorted(slices, key=lambda s: float(s.position @ normal))
    heights = np.array([float(s.position @ normal) for s in ordered])
    gaps = np.diff(heights)
    repeated = int(np.count_nonzero(gaps < _SAME_POSITION_MM))
    if repeated:
        raise InputError(
            f"{shown}: {repeated} DICOM slices repeat the position of another slice "
            "(several acquisitions mixed in one series?)"
        )
    step = float(np.median(gaps))
    regular = heights[0] + (heights[-1] - heights[0]) * np.arange(len(heights)) / (len(heights) - 1)
    if np.abs(heights - regular).max() > DICOM_GRID_TOLERANCE * step:
        raise InputError(
            f"{shown}: the DICOM slice spacing varies from {gaps.min():.3g} to {gaps.max():.3g} mm "
            "(missing or extra slices)"
        )
    offsets = np.array([s.position - ordered[0].position for s in ordered])
    lateral = offsets - np.outer(offsets @ normal, normal)
    if np.linalg.norm(lateral, axis=1).max() > DICOM_GRID_TOLERANCE * min(first.spacing[:2]):
        along = float(heights[-1] - heights[0])
        angle = math.degrees(math.atan2(float(np.linalg.norm(lateral[-1])), along))
        raise InputError(
            f"{shown}: gantry-tilted DICOM series (slices sheared by {angle:.1f} degrees); resample it to an "
            "orthogonal grid first (e.g. Slicer's acquisition geometry regularization)"
        )
    return ordered
