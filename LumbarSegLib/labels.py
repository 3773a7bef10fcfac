"""Vertebra labels: VerSe values, names, colours, SNOMED CT codes and network classes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# VerSe label values (C1..C7 = 1..7, T1..T12 = 8..19, L1..L5 = 20..24, L6 = 25,
# sacrum = 26, T13 = 28).
VERSE_NAMES: dict[int, str] = {
    **{i: f"C{i}" for i in range(1, 8)},
    **{7 + i: f"T{i}" for i in range(1, 13)},
    **{19 + i: f"L{i}" for i in range(1, 6)},
    25: "L6",
    26: "sacrum",
    28: "T13",
}
VERSE_VALUE: dict[str, int] = {name: value for value, name in VERSE_NAMES.items()}
LUMBAR_VALUES: tuple[int, ...] = (20, 21, 22, 23, 24)
L6_VALUE = 25
SACRUM_VALUE = 26
T13_VALUE = 28
THORACIC_VALUES: tuple[int, ...] = tuple(range(8, 20)) + (T13_VALUE,)
# The values LumbarSeg writes out (and scores): L1..L5 and L6.
OUTPUT_VALUES: tuple[int, ...] = LUMBAR_VALUES + (L6_VALUE,)

# Classes predicted by the segmentation network.  Thoracic vertebrae and the
# sacrum are context classes: they anchor the level count and let the
# post-processing detect transitional anatomy; they are not written out.
NETWORK_CLASSES: tuple[str, ...] = (
    "background", "L1", "L2", "L3", "L4", "L5", "L6", "thoracic", "sacrum",
)
# The network's lumbar vertebra classes, L1..L6.
LUMBAR_CLASSES: tuple[int, ...] = tuple(NETWORK_CLASSES.index(f"L{level}") for level in range(1, 7))
CLASS_OF_VERSE: dict[int, int] = {
    **{value: 1 + i for i, value in enumerate(LUMBAR_VALUES)},
    L6_VALUE: 6,
    **{value: 7 for value in THORACIC_VALUES},
    SACRUM_VALUE: 8,
}
VERSE_OF_OUTPUT_CLASS: dict[int, int] = {1: 20, 2: 21, 3: 22, 4: 23, 5: 24, 6: 25}


def lookup_table(mapping: dict[int, int]) -> np.ndarray:
    """A uint8 table ``t`` with ``t[key] = value`` (0 elsewhere), to map label arrays by indexing."""
    table = np.zeros(256, dtype=np.uint8)
    table[list(mapping)] = list(mapping.values())
    return table


@dataclass(frozen=True)
class Terminology:
    """A SNOMED CT code written ``scheme^value^meaning`` in Slicer terminology."""

    value: str
    meaning: str
    scheme: str = "SCT"

    def code(self) -> str:
        return f"{self.scheme}^{self.value}^{self.meaning}"


CATEGORY = Terminology("123037004", "Anatomical Structure")
VERTEBRA = Terminology("51282000", "Vertebra")
SNOMED: dict[str, Terminology] = {
    "L1": Terminology("66794005", "L1 vertebra"),
    "L2": Terminology("14293000", "L2 vertebra"),
    "L3": Terminology("36470004", "L3 vertebra"),
    "L4": Terminology("11994002", "L4 vertebra"),
    "L5": Terminology("49668003", "L5 vertebra"),
    # L6 has no SNOMED code of its own: it is written as a generic vertebra.
    "L6": VERTEBRA,
    "sacrum": Terminology("54735007", "Sacrum"),
}

# Distinct colours (RGB 0..1), after the colours Slicer uses for lumbar levels.
COLORS: dict[str, tuple[float, float, float]] = {
    "L1": (0.851, 0.643, 0.255),
    "L2": (0.498, 0.769, 0.369),
    "L3": (0.255, 0.545, 0.851),
    "L4": (0.800, 0.361, 0.710),
    "L5": (0.224, 0.753, 0.753),
    "L6": (0.902, 0.333, 0.333),
    "sacrum": (0.867, 0.820, 0.580),
}
