"""Draw the module icon and the 128x128 extension icon: a stylised lumbar spine.

Five vertebral bodies (L1 at the top, L5 at the bottom) in the segment colours of
``LumbarSegLib.labels.COLORS``, seen from the side with the lordotic curve, discs
between them and the spinous processes behind.  Run from anywhere:
``python Resources/Icons/make_icons.py``; the PNGs are committed.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from LumbarSegLib.labels import COLORS  # noqa: E402

SUPERSAMPLE = 8
LEVELS = ("L1", "L2", "L3", "L4", "L5")
BACKGROUND = (28, 43, 66, 255)
DISC = (214, 226, 236, 255)
OUTLINE = (20, 28, 40, 255)


def _rgba(level: str) -> tuple[int, int, int, int]:
    return tuple(round(channel * 255) for channel in COLORS[level]) + (255,)


def draw_spine(size: int, *, background: bool) -> Image.Image:
    """Return a ``size`` x ``size`` RGBA icon."""
    scale = size * SUPERSAMPLE
    image = Image.new("RGBA", (scale, scale), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    unit = scale / 128.0
    if background:
        draw.rounded_rectangle([0, 0, scale - 1, scale - 1], radius=24 * unit, fill=BACKGROUND)
    top, bottom = 12 * unit, 116 * unit
    pitch = (bottom - top) / len(LEVELS)
    line = max(1, round(2 * unit))
    for index, level in enumerate(LEVELS):
        # Lordosis: the lower lumbar bodies sit further anterior (to the left).
        centre_x = 60 * unit - 10 * unit * math.sin(math.pi * (index + 0.5) / len(LEVELS) * 0.9)
        width = (34 + 4 * index) * unit
        y0 = top + index * pitch + 2.5 * unit
        y1 = y0 + pitch - 5 * unit
        x0, x1 = centre_x - width / 2, centre_x + width / 2
        # Spinous process: a wedge behind the body, pointing down and back.
        mid = (y0 + y1) / 2
        process = [(x1 - 2 * unit, mid - 6 * unit), (x1 + 30 * unit, mid + 2 * unit),
                   (x1 + 30 * unit, mid + 9 * unit), (x1 - 2 * unit, mid + 6 * unit)]
        draw.polygon(process, fill=_rgba(level), outline=OUTLINE, width=line)
        draw.rounded_rectangle([x0, y0, x1, y1], radius=6 * unit, fill=_rgba(level), outline=OUTLINE, width=line)
        if index < len(LEVELS) - 1:
            disc_y = y1 + 2.5 * unit
            draw.line([(x0 + 5 * unit, disc_y), (x1 - 3 * unit, disc_y)], fill=DISC, width=round(3 * unit))
    return image.resize((size, size), Image.LANCZOS)


def main() -> None:
    draw_spine(64, background=False).save(HERE / "LumbarSeg.png")
    draw_spine(128, background=True).save(HERE / "LumbarSegExtension.png")


if __name__ == "__main__":
    main()
