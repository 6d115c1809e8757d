"""Metrics on hand-computed cases, the real dense CRF on a two-region image, visualisation shapes."""
import numpy as np
import pytest

from inetseg import metrics, viz
from inetseg.config import CRFConfig
from inetseg.crf import crf_labels, dense_crf


def test_confusion_and_iou_by_hand():
    gt = np.array([[0, 0, 1, 1], [0, 2, 2, 255]])
    pred = np.array([[0, 1, 1, 1], [0, 2, 0, 2]])
    cm = metrics.confusion_matrix(gt, pred, 3)
    assert cm[:, :3].tolist() == [[2, 1, 0], [0, 2, 0], [1, 0, 1]]
    iou = metrics.iou_from_confusion(cm)
    assert np.allclose(iou, [2 / 4, 2 / 3, 1 / 2])
    assert metrics.miou(cm) == pytest.approx(np.mean([0.5, 2 / 3, 0.5]))


def test_absent_class_and_no_label_predictions():
    gt = np.array([0, 0, 1, 1])
    cm = metrics.confusion_matrix(gt, np.array([0, 0, 1, 255]), 3)
    iou = metrics.iou_from_confusion(cm)
    assert np.isnan(iou[2]) and iou[1] == pytest.approx(0.5) and iou[0] == 1
    assert metrics.miou(cm) == pytest.approx(0.75)
    base = metrics.confusion_matrix(gt, np.zeros(4, int), 3)
    assert metrics.miou(base) == pytest.approx(0.25)  # background 0.5, class 1 zero


# The defaults before jobs/bench/crf.py chose narrower ones: DeepLab-like wide, strong kernels, for the
# tests of what the kernels do (clean noise, scale with the image).
WIDE = {"gaussian_compat": 3.0, "bilateral_sxy": 50.0, "bilateral_srgb": 13.0, "bilateral_compat": 4.0}


def _two_regions():
    img = np.zeros((40, 40, 3), np.uint8)
    img[:, :20] = (200, 30, 30)
    img[:, 20:] = (30, 30, 200)
    truth = np.zeros((40, 40), np.uint8)
    truth[:, 20:] = 1
    rng = np.random.default_rng(0)
    p1 = np.clip(np.where(truth == 1, 0.6, 0.4) + rng.normal(0, 0.25, truth.shape), 0.01, 0.99)
    return img, truth, np.stack([1 - p1, p1]).astype(np.float32)


def test_crf_cleans_noisy_probabilities():
    img, truth, probs = _two_regions()
    before = (probs.argmax(0) == truth).mean()
    after = (crf_labels(img, probs, CRFConfig(**WIDE)) == truth).mean()
    assert after > before and after > 0.95
    assert (crf_labels(img, probs, CRFConfig()) == truth).mean() > before  # the defaults too, less so
    q = dense_crf(img, probs, CRFConfig(iterations=2))
    assert q.shape == probs.shape and np.allclose(q.sum(0), 1, atol=1e-3)


def test_crf_rejects_bad_shapes():
    img, _, probs = _two_regions()
    with pytest.raises(ValueError):
        dense_crf(img[:, :10], probs, CRFConfig())
    with pytest.raises(ValueError):
        dense_crf(img.astype(np.float32), probs, CRFConfig())


def test_viz():
    lab = np.array([[0, 1], [2, 255]], np.uint8)
    col = viz.colorize(lab)
    assert col.shape == (2, 2, 3) and col.dtype == np.uint8 and (col[0, 0] == 0).all()
    assert viz.heatmap(np.random.rand(5, 6)).shape == (5, 6, 3)
    g = viz.grid([[col, col], [col, col]], ["a", "b"], cell=16)
    assert g.shape[2] == 3 and g.shape[1] == 2 * 16 + 3 * 2
    assert viz.encode_png(g)[:4] == b"\x89PNG"


def test_overlay_blends_labelled_pixels_and_draws_a_legend():
    img = np.full((120, 160, 3), 100, np.uint8)
    lab = np.zeros((120, 160), np.uint8)
    lab[60:, 80:] = 2
    out = viz.overlay(img, lab, ["background", "cat", "dog"], alpha=0.5)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert (out[-1, -1] == (img[-1, -1] * 0.5 + viz.colorize(lab)[-1, -1] * 0.5).astype(np.uint8)).all()
    assert (out[60, 0] == img[60, 0]).all()  # background is left as it was
    assert (out[:20, :20] == 255).any()  # the legend's white box, top left
    assert (viz.overlay(img, np.zeros_like(lab), ["background", "cat"]) == img).all()  # nothing to list
    assert viz.overlay(img[:3, :2], lab[:3, :2] + 1, ["background", "cat", "dog"]).shape == (3, 2, 3)


def test_crf_params_drive_the_crf_alone():
    from inetseg.config import CRFParams

    img, truth, probs = _two_regions()
    assert (crf_labels(img, probs, CRFParams()) == crf_labels(img, probs, CRFConfig())).all()


def test_crf_kernel_widths_follow_the_image_size():
    from inetseg.crf import kernel_widths

    cfg = CRFConfig(**WIDE)  # DeepLab's widths for ~500 px images
    assert kernel_widths(375, 500, cfg) == (3.0, 50.0)
    assert kernel_widths(128, 100, cfg) == pytest.approx((1.0, 12.8))  # never below a pixel
    assert kernel_widths(128, 100, CRFConfig(**WIDE, reference_side=0)) == (3.0, 50.0)
    assert kernel_widths(375, 500, CRFConfig()) == (3.0, 20.0)


def _small_object(side=128, obj=8):
    """A small coloured square the network found with middling confidence, on a varied background."""
    rng = np.random.default_rng(1)
    img = rng.integers(60, 140, (side, side, 3)).astype(np.uint8)
    truth = np.zeros((side, side), np.uint8)
    y0 = side // 3
    truth[y0:y0 + obj, y0:y0 + obj] = 1
    img[truth == 1] = (220, 40, 40)
    p1 = np.where(truth == 1, 0.62, 0.08) + rng.normal(0, 0.05, truth.shape)
    p1 = np.clip(p1, 0.01, 0.99)
    return img, truth, np.stack([1 - p1, p1]).astype(np.float32)


def test_scaled_crf_keeps_a_small_object_that_unscaled_kernels_erase():
    img, truth, probs = _small_object()

    def iou(pred):
        return ((pred == 1) & (truth == 1)).sum() / ((pred == 1) | (truth == 1)).sum()

    scaled = iou(crf_labels(img, probs, CRFConfig(**WIDE)))
    unscaled = iou(crf_labels(img, probs, CRFConfig(**WIDE, reference_side=0)))
    assert scaled > 0.8, (scaled, unscaled)
    assert unscaled < scaled, (scaled, unscaled)
