"""HU windowing shared by training and inference.

The paper's window is not given. Both networks see HU clipped to
[-1000, 2000] and divided by 1000: air maps to -1, water to 0, cancellous bone
to ~0.2, cortical bone to ~1; metal saturates at 2. The wide window keeps the
cortical/cancellous contrast that separates neighbouring vertebrae and the
soft-tissue/air contrast the localizer uses to find the body.
"""

from __future__ import annotations

import numpy as np

HU_MIN = -1000.0
HU_MAX = 2000.0
HU_SCALE = 1000.0
AIR_HU = -1000.0


def normalise_hu(hu: np.ndarray) -> np.ndarray:
    """Map HU to the network input range [-1, 2] as float32."""
    out = np.clip(np.asarray(hu, dtype=np.float32), HU_MIN, HU_MAX)
    out /= HU_SCALE
    return out


# The network input value of air: what volumes are padded with outside the scan.
AIR_INPUT = float(normalise_hu(np.array([AIR_HU]))[0])
