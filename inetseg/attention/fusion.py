"""Eqn 8: forward CAM plus the product of the two excitation maps, each normalised per image."""
from __future__ import annotations

import torch

from inetseg.attention.cam import CAM_NORMS, normalise_map, normalise_minmax, upsample

# How each map is scaled before the thresholds of Eqn 10 apply (also in the README):
#   F (CAM, Eqn 5): cam_norm=max: ReLU, then divided by its own per-image maximum -> [0, 1];
#                   cam_norm=minmax: minus its per-image minimum, divided by its range -> [0, 1];
#   B_2, B_3b (Eqn 7): probabilities (>= 0), each divided by its per-image maximum -> [0, 1];
#   A = lambda1 * up(F) + lambda2 * up(B_2) * up(B_3b), then divided by its own maximum -> [0, 1],
# so "above 0.65" always means "at least 65% of this image's strongest evidence", whatever the
# network's raw scale, and lambda1 = lambda2 = 1 weighs the two terms equally at their peaks.
MAPS = ("forward", "backward", "fused")


def fuse(cam: torch.Tensor, b2: torch.Tensor, b3b: torch.Tensor, size: tuple[int, int], lambda1: float = 1.0,
         lambda2: float = 1.0, which: str = "fused", cam_norm: str = "max") -> torch.Tensor:
    """N x H x W attention in [0, 1] at `size` from raw maps (N x h x w each, any strides).

    which = "forward" (F only), "backward" (B_2 * B_3b only) or "fused" (Eqn 8). Upsampling is bilinear.
    """
    if which not in MAPS:
        raise ValueError(f"attention maps must be one of {MAPS}, got {which!r}")
    if cam_norm not in CAM_NORMS:
        raise ValueError(f"cam_norm must be one of {CAM_NORMS}, got {cam_norm!r}")
    parts = []
    if which in ("forward", "fused"):
        norm = normalise_map if cam_norm == "max" else normalise_minmax
        parts.append(lambda1 * upsample(norm(cam.float()), size))
    if which in ("backward", "fused"):
        parts.append(lambda2 * upsample(normalise_map(b2.float()), size) * upsample(normalise_map(b3b.float()), size))
    a = sum(parts)
    return normalise_map(a).clamp(0, 1)  # bilinear overshoot and the sum, back to [0, 1]
