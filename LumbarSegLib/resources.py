"""Locate bundled runtime resources (model weights, terminology) in any install layout."""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def resources_dir() -> Path:
    """Return the ``Resources`` folder.

    Three layouts are supported: the source tree (``Resources/`` beside the
    package, also what Slicer's "Additional module paths" and the built
    extension see) and a pip-installed wheel, where ``Resources/`` is
    packaged as ``LumbarSegLib/_resources``.
    """
    for candidate in (_PACKAGE_DIR.parent / "Resources", _PACKAGE_DIR / "_resources"):
        if (candidate / "Models").is_dir():
            return candidate
    raise FileNotFoundError(f"LumbarSeg resources not found beside {_PACKAGE_DIR}")


def model_path(name: str) -> Path:
    """Return the path of a bundled model file, e.g. ``model_path("xunet.pt")``."""
    return resources_dir() / "Models" / name
