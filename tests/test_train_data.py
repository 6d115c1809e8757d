"""The Ray Data batch transforms: shapes, ranges, joint image/mask augmentation, holdout split."""
import numpy as np
import torch

from inetseg import imaging
from inetseg.schema import IGNORE
from inetseg.train.data import classifier_batch, holdout_side, in_holdout, normalise, segmenter_batch, to_input


def _rows(n=6, size=(40, 56)):
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 255, (*size, 3), dtype=np.uint8) for _ in range(n)]
    masks = []
    for _ in range(n):
        m = np.zeros(size, np.uint8)
        m[10:20, 10:30] = 2
        m[0:3] = IGNORE
        masks.append(m)
    return {"id": np.array([f"id{i}" for i in range(n)]), "label": np.arange(n) % 3 + 1,
            "image": [imaging.encode_jpeg(i) for i in imgs], "mask": [imaging.encode_png(m) for m in masks]}


def test_normalise_range():
    x = normalise(np.array([[[[0, 255, 128]]]], dtype=np.uint8))
    assert x.shape == (1, 3, 1, 1)
    assert np.isclose(x.min(), -1) and np.isclose(x.max(), 1)


def test_classifier_batch_shapes_and_labels():
    rows = _rows()
    out = classifier_batch(rows, 32, augment=True)
    assert out["x"].shape == (6, 3, 32, 32) and out["x"].dtype == np.uint8  # 4x lighter in the object store
    assert out["y"].tolist() == [0, 1, 2, 0, 1, 2]
    x = to_input(torch.from_numpy(out["x"]))
    assert x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
    ref = normalise(out["x"].transpose(0, 2, 3, 1))  # the same mapping as the inference stages use
    assert np.allclose(x.numpy(), ref, atol=1e-6)


def test_decoded_pixels_make_the_same_batch_as_jpeg_bytes():
    from inetseg.train.data import decode_batch

    rows = _rows()
    decoded = decode_batch(rows)
    assert decoded["image"][0].dtype == np.uint8 and decoded["image"][0].ndim == 3
    assert np.array_equal(classifier_batch(decoded, 32, augment=False)["x"],
                          classifier_batch(rows, 32, augment=False)["x"])


def test_holdout_is_deterministic_and_disjoint():
    ids = [f"img{i}" for i in range(2000)]
    a, b = in_holdout(ids, 0.1), in_holdout(ids, 0.1)
    assert np.array_equal(a, b)
    assert 0.07 < a.mean() < 0.13
    rows = _rows(20)
    train = holdout_side(rows, 0.5, want_holdout=False)
    val = holdout_side(rows, 0.5, want_holdout=True)
    assert len(train["id"]) + len(val["id"]) == 20 and not set(train["id"]) & set(val["id"])
    assert set(train) == set(rows) and len(classifier_batch(val, 16, False)["y"]) == len(val["id"])


def test_segmenter_batch_keeps_labels_and_ignore():
    rows = _rows()
    for augment in (False, True):
        out = segmenter_batch(rows, 48, augment=augment)
        assert out["x"].shape == (6, 3, 48, 48)
        assert out["mask"].shape == (6, 48, 48)
        assert set(np.unique(out["mask"])) <= {0, 2, IGNORE}
