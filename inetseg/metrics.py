"""Segmentation metrics from a confusion matrix: IoU per class, mIoU, pixel accuracy (pure numpy).

The matrix is C x (C + 1): rows are ground-truth classes, columns predicted classes, and the last
column counts pixels predicted with no valid label (e.g. 255, the trimap's 'ignore'). Such a pixel is
a miss for its true class but a false positive for no class.
"""
from __future__ import annotations

import numpy as np


def confusion_matrix(gt: np.ndarray, pred: np.ndarray, num_classes: int, ignore: int = 255) -> np.ndarray:
    """C x (C+1) int64 counts over the pixels whose gt is a class (gt == ignore is skipped)."""
    if gt.shape != pred.shape:
        raise ValueError(f"gt {gt.shape} and pred {pred.shape} differ")
    c = num_classes
    g = gt.reshape(-1).astype(np.int64)
    p = pred.reshape(-1).astype(np.int64)
    valid = (g != ignore) & (g >= 0) & (g < c)
    g, p = g[valid], p[valid]
    p = np.where((p >= 0) & (p < c), p, c)  # anything else -> the 'no label' column
    return np.bincount(g * (c + 1) + p, minlength=c * (c + 1)).reshape(c, c + 1)


def iou_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Per-class IoU = TP / (TP + FP + FN); NaN for a class absent from both gt and prediction."""
    c = cm.shape[0]
    tp = np.diag(cm[:, :c]).astype(np.float64)
    union = cm.sum(1) + cm[:, :c].sum(0) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.maximum(union, 1), np.nan)


def miou(cm: np.ndarray) -> float:
    """Mean IoU over the classes present in gt or prediction."""
    iou = iou_from_confusion(cm)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def pixel_accuracy(cm: np.ndarray) -> float:
    total = cm.sum()
    return float(np.trace(cm[:, : cm.shape[0]]) / total) if total else float("nan")


def summarize(cm: np.ndarray, class_names: list[str]) -> dict:
    """{'miou', 'pixel_accuracy', 'per_class_iou': {name: iou or None}}."""
    iou = iou_from_confusion(cm)
    return {"miou": miou(cm), "pixel_accuracy": pixel_accuracy(cm),
            "per_class_iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(class_names, iou)}}


class ConfusionMeter:
    """Accumulates a confusion matrix over many images."""

    def __init__(self, num_classes: int, ignore: int = 255):
        self.num_classes, self.ignore = num_classes, ignore
        self.cm = np.zeros((num_classes, num_classes + 1), np.int64)

    def update(self, gt: np.ndarray, pred: np.ndarray) -> None:
        self.cm += confusion_matrix(gt, pred, self.num_classes, self.ignore)
