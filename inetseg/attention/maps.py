"""The attention model of section 3.1 end to end for a batch: CAM + excitation (Eqn 5-8), Eqn 9, Eqn 10."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from inetseg import imaging
from inetseg.attention import smoothing
from inetseg.attention.cam import forward_cam
from inetseg.attention.excitation import googlenet_excitation
from inetseg.attention.fusion import fuse
from inetseg.attention.objectness import boundary_objectness
from inetseg.attention.trimap import trimap
from inetseg.train.data import normalise


@dataclass(frozen=True)
class Method:
    """Which parts of the attention model run (the ablation rows of Table 1 are settings of this)."""

    maps: str = "fused"  # forward | backward | fused (Eqn 8)
    lambda1: float = 1.0
    lambda2: float = 1.0
    cam_norm: str = "minmax"  # how the CAM is scaled to [0, 1] before Eqn 8: max | minmax
    eb_bias: str = "ignore"  # excitation backprop: biases ignored, or absorbed as constant children
    smoothing: bool = True  # Eqn 9 over unsupervised segments
    segment_scale: float = 100.0  # Felzenszwalb scale (larger -> larger segments)
    segment_sigma: float = 0.8
    segment_min_size: int = 20
    trimap: bool = True  # Eqn 10; off: object above delta_background, background elsewhere, nothing ignored
    objectness: float = 0.0  # weight of the boundary-connectivity objectness fused in before Eqn 9 (0 = the paper)
    delta_object: float = 0.65
    delta_background: float = 0.5


def attention_maps(model: torch.nn.Module, images: list[np.ndarray], labels: np.ndarray, input_size: int,
                   device: torch.device, method: Method) -> list[np.ndarray]:
    """Attention of each image's label (1..K) at the image's own size, float32 H x W in [0, 1] (Eqn 8)."""
    x = torch.from_numpy(normalise(np.stack([imaging.resize_square(im, input_size) for im in images]))).to(device)
    lab0 = torch.as_tensor(np.asarray(labels) - 1, dtype=torch.long, device=device)
    if method.maps == "forward":  # no backward pass needed

        with torch.no_grad():
            f5 = model.forward_features(x)["inception5b"]
        b2 = b3b = None
    else:
        out = googlenet_excitation(model, x, lab0, bias=method.eb_bias)
        f5, b2, b3b = out["inception5b"], out["conv3"], out["inception3b"]
    with torch.no_grad():  # the fc weight needs no gradient here
        cam = forward_cam(f5.float(), model.fc.weight.float(), lab0)
        if b2 is None:
            b2 = b3b = torch.ones_like(cam)
        att = fuse(cam, b2, b3b, (input_size, input_size), method.lambda1, method.lambda2, method.maps,
                   method.cam_norm).cpu().numpy()
    # Back at the image's own size, divided by the peak again: resizing can lower it, and Eqn 10's
    # thresholds are fractions of it.
    return [smoothing.renormalise(np.clip(cv2.resize(a, (im.shape[1], im.shape[0]), interpolation=cv2.INTER_LINEAR),
                                          0, None)) for a, im in zip(att, images)]


def pseudo_label(att: np.ndarray, rgb: np.ndarray, label: int, method: Method) -> tuple[np.ndarray, np.ndarray]:
    """(mask, final attention): [objectness fused in], Eqn 9 smoothing over segments of rgb, then Eqn 10
    (or one cut)."""
    seg = None
    if method.smoothing or method.objectness > 0:
        seg = smoothing.segments(rgb, method.segment_scale, method.segment_sigma, method.segment_min_size)
    if method.objectness > 0:  # a weighted mean of two [0, 1] maps, back to a peak of 1 for Eqn 10
        obj = boundary_objectness(rgb, seg)
        att = smoothing.renormalise((att + method.objectness * obj) / (1.0 + method.objectness))
    if method.smoothing:
        att = smoothing.renormalise(smoothing.smooth(att, seg))
    if method.trimap:
        mask = trimap(att, label, method.delta_object, method.delta_background)
    else:  # one cut, nothing ignored
        mask = np.where(att > method.delta_background, np.uint8(label), np.uint8(0)).astype(np.uint8)
    return mask, att.astype(np.float32)
