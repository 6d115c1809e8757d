"""The dense CRF wrapper against a brute-force mean field, its settings, and the crf stage's compute."""
import numpy as np
import pytest

from inetseg import config as C
from inetseg import imaging, masks, schema, shards
from inetseg.crf import dense_crf, refine_png


def _brute_force(unary: np.ndarray, feats: np.ndarray, weight: float, iterations: int) -> np.ndarray:
    """Mean field with an exact Gaussian kernel exp(-|f_i - f_j|^2 / 2), symmetric normalisation and a Potts
    compatibility (what pydensecrf's permutohedral lattice approximates): labels x pixels marginals."""
    k = np.exp(-0.5 * ((feats[:, None] - feats[None]) ** 2).sum(-1))
    norm = 1 / np.sqrt(k.sum(1))
    q = np.exp(-unary) / np.exp(-unary).sum(0)
    for _ in range(iterations):
        msg = ((q * norm) @ k.T) * norm
        t = -unary + weight * msg
        q = np.exp(t - t.max(0)) / np.exp(t - t.max(0)).sum(0)
    return q


@pytest.mark.parametrize("kernel", ["gaussian", "bilateral"])
def test_crf_matches_a_brute_force_mean_field_on_a_non_square_image(kernel):
    """Guards the wrapper: pixel order (row-major H x W, DenseCRF2D(w, h)), widths in pixels, compat's sign."""
    rng = np.random.default_rng(0)
    h, w, c = 9, 14, 3
    image = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
    image[:, :6] = (200, 40, 40)
    probs = rng.dirichlet(np.ones(c), size=(h, w)).transpose(2, 0, 1).astype(np.float32)
    params = C.CRFParams(iterations=3, reference_side=0, gaussian_sxy=2.0, bilateral_sxy=3.0, bilateral_srgb=30.0,
                         gaussian_compat=3.0 if kernel == "gaussian" else 0.0,
                         bilateral_compat=3.0 if kernel == "bilateral" else 0.0)
    yy, xx = np.mgrid[0:h, 0:w]
    sxy = params.gaussian_sxy if kernel == "gaussian" else params.bilateral_sxy
    feats = np.stack([xx.ravel() / sxy, yy.ravel() / sxy], 1)
    if kernel == "bilateral":
        feats = np.concatenate([feats, image.reshape(-1, 3) / params.bilateral_srgb], 1)
    want = _brute_force(-np.log(probs.reshape(c, -1)), feats, 3.0, 3).reshape(c, h, w)
    got = dense_crf(image, probs, params)
    # The lattice approximates the kernel (mean error 0.004 / 0.02 here); widths 4x off or a negative
    # compatibility give 0.05-0.19 and 66-93 % agreement.
    assert np.abs(got - want).mean() < 0.03
    assert (got.argmax(0) == want.argmax(0)).mean() > 0.95
    assert (got.argmax(0) != probs.argmax(0)).any()  # the test is not vacuous: the CRF changed labels


def test_kernels_off_leave_the_probabilities():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (6, 7, 3)).astype(np.uint8)
    probs = rng.dirichlet(np.ones(4), size=(6, 7)).transpose(2, 0, 1).astype(np.float16)  # as stored
    q = dense_crf(image, probs, C.CRFParams(gaussian_compat=0.0, bilateral_compat=0.0))
    assert np.allclose(q, probs.astype(np.float32) / probs.astype(np.float32).sum(0), atol=1e-3)


def test_defaults_keep_a_thin_low_contrast_object_the_old_wide_kernels_erased():
    """A 2 px pole 10 grey levels off its background (a dark CamVid pole against a wall), found by the
    segmenter with blurred edges: the old DeepLab-like defaults pull it into the background entirely."""
    import cv2

    rng = np.random.default_rng(0)
    image = np.clip(rng.normal(90, 6, (96, 96, 3)), 0, 255).astype(np.uint8)
    truth = np.zeros((96, 96), np.uint8)
    truth[10:86, 48:50] = 1
    image[truth == 1] += 10
    p1 = cv2.GaussianBlur(truth.astype(np.float32), (0, 0), 1.0)
    p1 = np.clip(p1 * 0.8 / p1.max() + 0.03, 0.01, 0.99)
    probs = np.stack([1 - p1, p1]).astype(np.float32)

    def iou(params):
        pred = dense_crf(image, probs, params).argmax(0)
        return ((pred == 1) & (truth == 1)).sum() / ((pred == 1) | (truth == 1)).sum()

    old = C.CRFParams(gaussian_compat=3.0, bilateral_sxy=50.0, bilateral_srgb=13.0, bilateral_compat=4.0)
    assert iou(C.CRFParams()) > 0.9 and iou(old) < 0.1, (iou(C.CRFParams()), iou(old))


def test_refine_png_reads_a_predictions_row():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (5, 8, 3)).astype(np.uint8)
    probs = rng.dirichlet(np.ones(3), size=(5, 8)).transpose(2, 0, 1).astype(np.float16)
    png = refine_png(imaging.encode_png(image), schema.encode_probs(probs), C.CRFParams(iterations=1))
    assert masks.decode_mask(png).shape == (5, 8) and masks.decode_mask(png).max() < 3


def test_crf_settings_are_checked():
    with pytest.raises(C.ConfigError, match="compat"):
        C.from_dict(C.CRFParams, {"bilateral_compat": -1})
    with pytest.raises(C.ConfigError, match="srgb"):
        C.from_dict(C.CRFParams, {"bilateral_srgb": 0})
    with pytest.raises(C.ConfigError, match="CPUs only"):
        C.from_dict(C.CRFConfig, {"compute": {"use_gpu": True}})
    assert C.CRFConfig().compute.inference_batch_size == 8


def test_task_pool_takes_the_compute_keys():
    from ray.data import TaskPoolStrategy

    from inetseg.stages.common import task_pool

    kw = task_pool(C.ComputeConfig(num_actors=3, cpus_per_worker=1, inference_batch_size=5))
    assert kw == {"compute": TaskPoolStrategy(size=3), "num_cpus": 1, "batch_size": 5}


def test_crf_stage_refines_every_row(ray_session, tmp_path):
    from conftest import random_predictions

    from inetseg.stages import crf

    src = random_predictions(str(tmp_path / "predictions"), 5, 12, 10, seed=3)
    cfg = C.CRFConfig(predictions=src, out=str(tmp_path / "crf"), iterations=2,
                      compute=C.ComputeConfig(num_actors=2, inference_batch_size=2))
    assert crf.run(cfg)["images"] == 5
    out = shards.read_table(cfg.out)
    assert sorted(out.column("id").to_pylist()) == [f"r{i:04d}" for i in range(5)]
    assert out.column("probs").null_count == 5
    assert all(masks.decode_mask(p).shape == (12, 10) for p in out.column("pred").to_pylist())
