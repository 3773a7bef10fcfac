"""Prototypes of proposed changes to the pipeline's hot spots, and a switch that applies them.

Measured against the current functions by ``bench/hotspots.py``; applied to a
whole run by ``python bench/run_benchmark.py --prototypes`` (in the child
process only: the library's files are not changed). Each prototype keeps the
current function's signature so it can stand in for it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from LumbarSegLib import io
from LumbarSegLib.inference import padded_shape, sliding_window
from LumbarSegLib.intensity import AIR_INPUT

def gzip_trailer_size(path: Path) -> int:
    """The uncompressed length (mod 2**32) a gzip file's trailer states: O(1) instead of decompressing."""
    with path.open("rb") as stream:
        stream.seek(-4, 2)
        return int.from_bytes(stream.read(4), "little")


def localizer_single_pass(net: torch.nn.Module, volume: np.ndarray, device: torch.device) -> np.ndarray:
    """The localizer over the whole coarse volume in one window (it is fully convolutional), as the XUNet runs."""
    whole = padded_shape(volume.shape, volume.shape, net.size_multiple)
    return sliding_window(net, volume, patch=whole, device=device, pad_value=AIR_INPUT, activation="sigmoid")[0]


def nifti_byte_count_from_trailer(p: Path, shown: str) -> int:
    """``io._nifti_byte_count`` from the gzip trailer (uncompressed length mod 2**32) instead of decompressing.

    A truncated file ends inside the compressed data, so its last four bytes are not the length.
    (Files over 4 GiB need the comparison modulo 2**32.)
    """
    return gzip_trailer_size(p) if p.name.lower().endswith(".gz") else p.stat().st_size


PROTOTYPES = {
    "read": (io, "_nifti_byte_count", nifti_byte_count_from_trailer),
}


def apply_prototypes(names: str = "all") -> list[str]:
    """Put the named prototypes (comma-separated keys of ``PROTOTYPES``, or ``all``) in place; their names."""
    chosen = list(PROTOTYPES) if names == "all" else [n.strip() for n in names.split(",") if n.strip()]
    unknown = sorted(set(chosen) - set(PROTOTYPES))
    if unknown:
        raise ValueError(f"unknown prototypes {unknown}; choose from {', '.join(PROTOTYPES)}")
    for name in chosen:
        owner, attribute, replacement = PROTOTYPES[name]
        setattr(owner, attribute, replacement)
    return chosen
