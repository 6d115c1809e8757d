"""Dense CRF post-processing of one image's class probabilities (pydensecrf): pure, no Ray.

Usage follows pydensecrf's: unary = -log(p) as a C-contiguous float32 (labels x pixels) array, pixels in
row-major H x W order; DenseCRF2D(width, height, labels); the bilateral kernel on an H x W x 3 uint8
C-contiguous RGB image; mean-field `inference(n)`. tests/test_crf.py checks it against a brute-force mean
field. Whether it helps, and with which settings, is measured by jobs/bench/crf.py (results/crf.json).
"""
from __future__ import annotations

import numpy as np
import pydensecrf.densecrf as dcrf

from inetseg import imaging, schema
from inetseg.config import CRFParams

PROB_FLOOR = 1e-8  # smallest probability a unary sees (-log: 18.4); 0 would be an infinite cost


def dense_crf(image: np.ndarray, probs: np.ndarray, params: CRFParams) -> np.ndarray:
    """Refined marginals (C x H x W float32) of a fully connected CRF with Gaussian + bilateral kernels.

    image: H x W x 3 uint8 RGB; probs: C x H x W softmax (any float dtype); params: CRFParams or CRFConfig.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be H x W x 3 uint8, got {image.shape} {image.dtype}")
    if probs.ndim != 3 or probs.shape[1:] != image.shape[:2]:
        raise ValueError(f"probs must be C x {image.shape[0]} x {image.shape[1]}, got {probs.shape}")
    c, h, w = probs.shape
    gaussian_sxy, bilateral_sxy = kernel_widths(h, w, params)
    d = dcrf.DenseCRF2D(w, h, c)
    unary = -np.log(np.clip(probs.astype(np.float32), PROB_FLOOR, 1.0)).reshape(c, -1)
    d.setUnaryEnergy(np.ascontiguousarray(unary))
    if params.gaussian_compat > 0:
        d.addPairwiseGaussian(sxy=gaussian_sxy, compat=params.gaussian_compat)
    if params.bilateral_compat > 0:
        d.addPairwiseBilateral(sxy=bilateral_sxy, srgb=params.bilateral_srgb,
                               rgbim=np.ascontiguousarray(image), compat=params.bilateral_compat)
    q = d.inference(params.iterations)
    return np.asarray(q, dtype=np.float32).reshape(c, h, w)


def kernel_widths(h: int, w: int, params: CRFParams) -> tuple[float, float]:
    """(Gaussian, bilateral) spatial widths in pixels for an h x w image.

    The configured widths are meant for images whose longer side is `params.reference_side` (~500 px,
    PASCAL VOC); they scale with the image so the kernels cover the same share of it. Unscaled on the
    demo's 128 px images the 50 px bilateral kernel spans most of the picture and pulls small objects
    into the background (demo mIoU 37.7 % -> 30.5 % with the CRF; 37.3 % scaled).
    reference_side = 0 takes the widths as pixels. Never below one pixel.
    """
    scale = max(h, w) / params.reference_side if params.reference_side > 0 else 1.0
    return max(1.0, params.gaussian_sxy * scale), max(1.0, params.bilateral_sxy * scale)


def crf_labels(image: np.ndarray, probs: np.ndarray, params: CRFParams) -> np.ndarray:
    """The CRF's labelling, H x W uint8."""
    return dense_crf(image, probs, params).argmax(0).astype(np.uint8)


def refine_png(image: bytes, probs: bytes, params: CRFParams) -> bytes:
    """One PREDICTIONS row's image and stored probabilities (.npy float16) -> the CRF's labelling as PNG."""
    return imaging.encode_png(crf_labels(imaging.decode_rgb(image), schema.decode_probs(probs), params))
