"""Label maps that need no model, to put a segmenter's mIoU in context (pure numpy)."""
from __future__ import annotations

import numpy as np


def centre_prior(height: int, width: int, label: int, area: float = 0.4) -> np.ndarray:
    """A centred ellipse with the image's aspect covering `area` of it, labelled `label`; background elsewhere.

    The ellipse's semi-axes are s*W/2 and s*H/2 with pi*s^2/4 = area, i.e. s = sqrt(4*area/pi).
    """
    s = float(np.sqrt(4.0 * area / np.pi))
    yy, xx = np.mgrid[0:height, 0:width]
    cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
    inside = ((yy - cy) / (s * height / 2.0)) ** 2 + ((xx - cx) / (s * width / 2.0)) ** 2 <= 1.0
    return np.where(inside, label, 0).astype(np.uint8)
