"""Classifier stage: GoogLeNet (weights=None) trained with Ray Train on the image shards."""
from __future__ import annotations

import logging
import time

import numpy as np
import ray

from inetseg import config as C
from inetseg import filtering, shards, storage
from inetseg.stages import training
from inetseg.stages.common import run_stage, stage_fingerprint, usable_images, usable_rows
from inetseg.train import classifier_loop
from inetseg.train.data import classifier_batch, decode_batch

log = logging.getLogger("inetseg")


def image_dataset(path: str, folds: int = 0, fold: int = -1, keep_fold: bool = False) -> ray.data.Dataset:
    """The ok rows of an IMAGES table (failed rows stay on disk, counted, never trained on); with
    folds > 1, every row but those of `fold` (or, keep_fold=True, only those)."""
    ds = usable_images(path, "image shards", ["id", "label", "image"])
    if folds > 1:
        ds = ds.map_batches(fold_rows, batch_format="pyarrow",
                            fn_kwargs={"folds": folds, "fold": fold, "keep": keep_fold})
    return ds


def fold_rows(batch, folds: int, fold: int, keep: bool):
    """Rows of one fold (keep) or of all the others."""
    import pyarrow as pa

    in_fold = filtering.fold_of(batch.column("id").to_pylist(), folds) == fold
    return batch.filter(pa.array(in_fold if keep else ~in_fold))


def training_rows(images: str, folds: int = 0, fold: int = -1) -> tuple[int, int]:
    """(images a run trains on, the bytes they take decoded, H x W x 3): the usable rows outside the
    left-out fold, from one driver-side read of the table's id/height/width columns."""
    t = usable_rows(images, ["id", "height", "width"])
    use = np.ones(t.num_rows, dtype=bool)
    if folds > 1:
        use = filtering.fold_of(t.column("id").to_pylist(), folds) != fold
    pixels = t.column("height").to_numpy(zero_copy_only=False).astype(np.int64) * \
        t.column("width").to_numpy(zero_copy_only=False).astype(np.int64)
    return int(use.sum()), int(3 * pixels[use].sum())


def cache_decoded(mode: str, nbytes: int) -> bool:
    """Keep decoded images in the object store? 'on', 'off', or 'auto' = when they take at most a quarter
    of the cluster's object store (beyond that Ray would spill them to disk, slower than decoding JPEG)."""
    if mode != "auto":
        return mode == "on"
    return nbytes <= ray.cluster_resources().get("object_store_memory", 0) / 4


def classes_of(images: str) -> list[str]:
    """The class list an image table was made with (label i = classes[i-1])."""
    return list(shards.read_marker(images)["classes"])


def check_init(init_from: str, classes: list[str], width: float) -> None:
    """The model a warm start loads must exist and have this run's classes and width (one-line errors)."""
    meta_path = storage.join(init_from, "meta.json")
    if not storage.exists(meta_path) or not storage.exists(storage.join(init_from, "model.pt")):
        raise FileNotFoundError(f"init_from={init_from}: no exported classifier there (model.pt + meta.json)")
    meta = storage.read_json(meta_path)
    if list(meta.get("classes", [])) != list(classes) or float(meta.get("width", -1)) != float(width):
        raise ValueError(f"init_from={init_from}: its classes {meta.get('classes')} / width {meta.get('width')} "
                         f"differ from this run's {classes} / {width}")


def run(cfg: C.ClassifierConfig, resume: bool = True) -> dict:
    """Train on cfg.images, write cfg.out/model.pt + meta.json; returns the stage marker."""
    shards.require(cfg.images, "image shards")
    C.validate(cfg)
    classes = classes_of(cfg.images)
    if cfg.init_from:
        check_init(cfg.init_from, classes, cfg.width)
    fp = stage_fingerprint(cfg, cfg.images)

    def body() -> dict:
        t0 = time.time()
        n_used, nbytes = training_rows(cfg.images, cfg.folds, cfg.fold)
        if n_used == 0:
            raise ValueError(f"no usable images in {cfg.images}")
        ds = image_dataset(cfg.images, cfg.folds, cfg.fold)
        cached = cache_decoded(cfg.cache_decoded, nbytes)
        if cached:  # every epoch re-runs the pipeline: decode once, and epochs only crop and flip
            log.info("classifier: caching %.0f MiB of decoded images in the object store", nbytes / 2**20)
            ds = ds.map_batches(decode_batch, batch_format="numpy", batch_size=64).materialize()
        train = ds.randomize_block_order().map_batches(classifier_batch, batch_format="numpy", batch_size=64,
                               fn_kwargs={"input_size": cfg.input_size, "augment": True,
                                          "holdout": cfg.holdout_fraction, "want_holdout": False})
        val = ds.map_batches(classifier_batch, batch_format="numpy", batch_size=64,
                             fn_kwargs={"input_size": cfg.input_size, "augment": False,
                                        "holdout": cfg.holdout_fraction, "want_holdout": True})
        datasets = {"train": train}
        if cfg.holdout_fraction > 0:  # without a held-out slice every val batch would be empty
            datasets["val"] = val
        if cfg.bn_recalibrate_images > 0:  # training images as inference sees them: whole, resized, no flip
            datasets["bn"] = ds.limit(cfg.bn_recalibrate_images).map_batches(
                classifier_batch, batch_format="numpy", batch_size=64,
                fn_kwargs={"input_size": cfg.input_size, "augment": False, "holdout": cfg.holdout_fraction,
                           "want_holdout": False})
        loop_config = {**C.to_dict(cfg), "num_classes": len(classes), "classes": classes,
                       "n_train": int(n_used * (1 - cfg.holdout_fraction)),
                       "init_from": storage.absolute(cfg.init_from) if cfg.init_from else ""}
        loop_config.pop("compute")
        result = training.fit(f"classifier-{fp}", classifier_loop.train_loop_per_worker, loop_config,
                              datasets, cfg.compute,
                              cfg.storage_path or cfg.out.rstrip("/") + "_ray_train", cfg.max_failures,
                              cfg.checkpoints_to_keep)
        meta = training.export_model(result, cfg.out)
        history = training.history(result, meta)
        return {"classes": classes, "images": int(n_used), "init_from": cfg.init_from,
                "cached_decoded": cached, "seconds": time.time() - t0,
                "metrics": meta["metrics"], "history": history}

    return run_stage("classifier", cfg.out, fp, resume, body)
