"""An unsupervised objectness prior from boundary connectivity (Zhu, Liang, Wei & Sun, CVPR 2014,
"Saliency optimization from robust background detection"): no learned parameters, no labels.

Why (beyond the paper): a classifier trained from scratch on a few thousand web photos attends to
their context as much as to the object (indoor walls for cats, grass for horses), and Eqn 10 then
cuts context into the pseudo labels. Photos found by a tag frame their object; background regions
are the ones that reach the image border easily. A segment's boundary connectivity is the length of
border it reaches through similar colours, over the square root of the area it reaches:

    d(p, q)   geodesic colour distance between segments p and q (shortest path over adjacent segments,
              edge weight = the distance of their mean CIE-Lab colours)
    area(p)   = sum_q exp(-d(p, q)^2 / (2 sigma_clr^2)) * pixels(q)
    len(p)    = sum_q exp(-d(p, q)^2 / (2 sigma_clr^2)) * border pixels(q)
    P_bg(p)   = 1 - exp(-(len(p) / sqrt(area(p)))^2 / (2 sigma_bnd^2))

and objectness = 1 - P_bg, in [0, 1]. sigma_clr = 10 and sigma_bnd = 1 are the paper's values.
"""
from __future__ import annotations

import cv2
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra


def _mean_lab(rgb: np.ndarray, seg: np.ndarray, n: int) -> np.ndarray:
    """n x 3 mean CIE-Lab colour (L in 0..100, a and b centred) of every segment."""
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float64)
    lab[:, 0] *= 100.0 / 255.0
    lab[:, 1:] -= 128.0
    ids = seg.ravel()
    count = np.maximum(np.bincount(ids, minlength=n), 1).astype(np.float64)
    return np.stack([np.bincount(ids, lab[:, c], minlength=n) for c in range(3)], 1) / count[:, None]


def _adjacent_pairs(seg: np.ndarray) -> np.ndarray:
    """E x 2 unique pairs (a < b) of 4-connected neighbouring segments."""
    a = np.concatenate([seg[:, :-1].ravel(), seg[:-1, :].ravel()])
    b = np.concatenate([seg[:, 1:].ravel(), seg[1:, :].ravel()])
    cut = a != b
    pairs = np.stack([np.minimum(a[cut], b[cut]), np.maximum(a[cut], b[cut])], 1)
    return np.unique(pairs, axis=0) if len(pairs) else pairs.reshape(0, 2)


def boundary_objectness(rgb: np.ndarray, seg: np.ndarray, sigma_clr: float = 10.0,
                        sigma_bnd: float = 1.0) -> np.ndarray:
    """H x W float32 objectness in [0, 1] of an RGB uint8 image over its segments (ids 0..S-1)."""
    if rgb.shape[:2] != seg.shape:
        raise ValueError(f"image {rgb.shape[:2]} and segments {seg.shape} differ in size")
    n = int(seg.max()) + 1
    if n == 1:  # one segment touching every border: nothing stands out
        return np.zeros(seg.shape, np.float32)
    colour = _mean_lab(rgb, seg, n)
    pairs = _adjacent_pairs(seg)
    # +1e-6: a zero weight would read as "no edge" in a sparse graph.
    weights = np.linalg.norm(colour[pairs[:, 0]] - colour[pairs[:, 1]], axis=1) + 1e-6
    graph = coo_matrix((weights, (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    near = np.exp(-dijkstra(graph, directed=False) ** 2 / (2 * sigma_clr ** 2))  # S x S, 0 when unreachable
    # In pixels, not segment counts: Zhu et al.'s superpixels are of one size, Felzenszwalb's are not (a
    # wall can be one big segment beside a few small ones). len / sqrt(area) has no unit either way.
    area = np.bincount(seg.ravel(), minlength=n).astype(np.float64)
    edge = np.bincount(np.concatenate([seg[0], seg[-1], seg[1:-1, 0], seg[1:-1, -1]]), minlength=n)
    connectivity = (near @ edge) / np.sqrt(near @ area)
    p_background = 1.0 - np.exp(-connectivity ** 2 / (2 * sigma_bnd ** 2))
    return (1.0 - p_background)[seg].astype(np.float32)
