"""Forward class activation maps (Eqn 5) and the normalisation applied before the trimap."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def forward_cam(feat: torch.Tensor, fc_weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eqn 5: F^k(x, y) = sum_c w^{k,c} f^c(x, y) for each image's own class k.

    feat: N x C x h x w (inception5b output), fc_weight: K x C, labels: N (0-based rows of fc_weight).
    Returns N x h x w. The fc bias is left out, as in Eqn 3.
    """
    return torch.einsum("nchw,nc->nhw", feat, fc_weight[labels])


def normalise_map(m: torch.Tensor) -> torch.Tensor:
    """ReLU, then divide each map by its own maximum (N x h x w -> values in [0, 1]).

    Eqn 10's thresholds are absolute numbers in [0, 1], while raw CAM scales vary from image to image
    and model to model; dividing by the per-image maximum makes 'above 0.65' mean 'at least 65% of
    this image's strongest evidence'. A map with no positive evidence stays all zero (all background).
    """
    m = m.clamp(min=0)
    peak = m.flatten(1).max(1).values.clamp(min=1e-12)
    return m / peak[:, None, None]


def normalise_minmax(m: torch.Tensor) -> torch.Tensor:
    """Subtract each map's minimum, then divide by its range (N x h x w -> [0, 1]).

    For a CAM that is positive everywhere (the network finds some evidence in every cell), dividing by
    the maximum leaves a flat map near 1 and the whole image becomes object; the minimum is the
    image's own floor of evidence, so min-max keeps the contrast (CAM's usual visualisation).
    """
    return normalise_map(m - m.flatten(1).min(1).values[:, None, None])  # >= 0, so the ReLU is a no-op


CAM_NORMS = ("max", "minmax")


def upsample(m: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """N x h x w -> N x H x W, bilinear (the upsampling of Eqn 8)."""
    return F.interpolate(m[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
