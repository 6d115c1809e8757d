"""The classifier stage on one worker: decoded-image caching across epochs, precise BatchNorm, bad keys."""
import pytest
from conftest import ingested_corpus

from inetseg import config as C
from inetseg.stages import classifier
from inetseg.train import classifier as train_classifier

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def images(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("clf")
    return root, ingested_corpus(root, 3, 12)


def _cfg(root, images, name, **kw):
    base = {"images": images, "out": str(root / name), "width": 0.25, "input_size": 64, "epochs": 2,
            "batch_size": 8, "holdout_fraction": 0.1, "compute": {"cpus_per_worker": 1}}
    return C.from_dict(C.ClassifierConfig, C.deep_merge(base, kw))


def test_cached_and_streamed_training_both_run_and_recalibrate(images):
    root, imgs = images
    on = classifier.run(_cfg(root, imgs, "on", cache_decoded="on"))
    off = classifier.run(_cfg(root, imgs, "off", cache_decoded="off"))
    assert on["cached_decoded"] is True and off["cached_decoded"] is False
    for meta in (on, off):
        epochs = [h for h in meta["history"] if not h.get("mid_epoch")]
        assert len(epochs) == 2
        # every training image once (a last batch of a single image has no variance and is skipped)
        train_images = meta["images"] - epochs[-1]["val_images"]
        assert train_images - 1 <= epochs[-1]["bn_recalibrated_images"] <= train_images, epochs[-1]
        assert "bn_recalibrated_images" not in epochs[0]  # only the final weights are recalibrated
        assert (root / ("on" if meta is on else "off") / "model.pt").exists()


def test_auto_caches_what_fits_and_counts_decoded_bytes(images):
    root, imgs = images
    n, nbytes = train_classifier.training_rows(imgs)
    assert (n, nbytes) == (36, 36 * 64 * 64 * 3)  # 36 images of 64 x 64 (ingest.max_side=64)
    assert train_classifier.cache_decoded("auto", nbytes) and not train_classifier.cache_decoded("off", nbytes)
    assert not train_classifier.cache_decoded("auto", 10**15) and train_classifier.cache_decoded("on", 10**15)
    folds = [train_classifier.training_rows(imgs, folds=3, fold=f) for f in range(3)]
    assert sum(36 - k for k, _ in folds) == 36  # each image is left out of exactly one fold
    assert all(b == k * 64 * 64 * 3 for k, b in folds)


def test_unknown_cache_mode_is_a_one_line_config_error(images):
    root, imgs = images
    with pytest.raises(C.ConfigError, match="cache_decoded must be one of auto, on, off"):
        _cfg(root, imgs, "bad", cache_decoded="sometimes")


def test_no_holdout_trains_without_a_validation_pass(images):
    root, imgs = images
    meta = classifier.run(_cfg(root, imgs, "noval", holdout_fraction=0.0, epochs=1))
    last = [h for h in meta["history"] if not h.get("mid_epoch")][-1]
    assert "val_acc" not in last and meta["images"] - 1 <= last["bn_recalibrated_images"] <= meta["images"]
