"""The trimap of Eqn 10: confident object, confident background, and an ignored band between."""
from __future__ import annotations

import numpy as np

IGNORE = 255


def trimap(att: np.ndarray, label, delta_object: float, delta_background: float,
           ignore: int = IGNORE) -> np.ndarray:
    """label where att > delta_object, ignore where delta_background < att <= delta_object, 0 elsewhere.

    att: H x W (or N x H x W) in [0, 1]; label: the class id 1..K (or an array of N ids).
    The paper's text gives delta1 = 0.5 and delta2 = 0.65 while requiring delta1 > delta2; we read
    them as swapped: object above 0.65, background at or below 0.5 (both configurable).
    """
    if not delta_background <= delta_object:
        raise ValueError(f"need delta_background <= delta_object, got {delta_background} > {delta_object}")
    att = np.asarray(att)
    lab = np.asarray(label, dtype=np.uint8)
    if lab.ndim == 1:
        lab = lab.reshape(-1, *([1] * (att.ndim - 1)))
    out = np.full(att.shape, ignore, dtype=np.uint8)
    obj = att > delta_object
    out[obj] = np.broadcast_to(lab, att.shape)[obj]
    out[att <= delta_background] = 0
    return out
