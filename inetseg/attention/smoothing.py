"""Eqn 9: attention averaged over unsupervised image segments (Felzenszwalb-Huttenlocher graph segmentation).

The paper turns an unsupervised edge detector's output into segments with MCG; neither has a
maintained, installable implementation. Felzenszwalb & Huttenlocher's graph-based segmentation
(scikit-image) is unsupervised (no learned parameters at all), runs in about linear time in the
pixels, and, like MCG's regions and unlike SLIC's near-regular superpixels, follows colour edges with
segments whose size adapts to the image: large on flat background, small on textured objects. That is
what Eqn 9 needs: a segment mostly inside or mostly outside the object, so its mean attention
spreads the object's evidence to its whole extent and cuts it at its boundary.
"""
from __future__ import annotations

import numpy as np
from skimage.segmentation import felzenszwalb


def segments(rgb: np.ndarray, scale: float = 100.0, sigma: float = 0.8, min_size: int = 20) -> np.ndarray:
    """H x W int segment ids (0..S-1) of an RGB uint8 image; larger `scale` means larger segments."""
    return felzenszwalb(rgb, scale=scale, sigma=sigma, min_size=min_size).astype(np.int32)


def smooth(att: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """Eqn 9: every pixel gets the mean attention of its segment (vectorised: two bincounts)."""
    if att.shape != seg.shape:
        raise ValueError(f"attention {att.shape} and segments {seg.shape} differ in size")
    ids = seg.ravel()
    sums = np.bincount(ids, weights=att.ravel().astype(np.float64))
    counts = np.bincount(ids)
    means = sums / np.maximum(counts, 1)
    return means[ids].reshape(att.shape).astype(np.float32)


def renormalise(att: np.ndarray) -> np.ndarray:
    """Divide by the maximum (averaging lowers the peak; Eqn 10's thresholds are relative to it)."""
    peak = float(att.max()) if att.size else 0.0
    return att / peak if peak > 0 else att
