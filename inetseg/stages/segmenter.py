"""Segmenter stage: DeepLab-style net on the classifier's backbone, trained with Ray Train on pseudo labels."""
from __future__ import annotations

import logging
import time

from inetseg import config as C
from inetseg import shards, storage
from inetseg.stages import training
from inetseg.stages.common import read_stage, run_stage, stage_fingerprint
from inetseg.train import segmenter_loop
from inetseg.train.data import segmenter_batch

log = logging.getLogger("inetseg")


def run(cfg: C.SegmenterConfig, resume: bool = True) -> dict:
    """Train on cfg.pseudo, write cfg.out/model.pt + meta.json; returns the stage marker."""
    shards.require(cfg.pseudo, "pseudo-label shards")
    shards.require(cfg.model, "classifier model")
    fp = stage_fingerprint(cfg, cfg.pseudo, cfg.model)

    def body() -> dict:
        t0 = time.time()
        cmeta = storage.read_json(storage.join(cfg.model, "meta.json"))
        n = shards.count_rows(cfg.pseudo)
        if n == 0:
            raise ValueError(f"no pseudo-labelled images in {cfg.pseudo}")
        ds = read_stage(cfg.pseudo, "pseudo-label shards", columns=["image", "mask"])
        train = ds.randomize_block_order().map_batches(segmenter_batch, batch_format="numpy", batch_size=32,
                               fn_kwargs={"input_size": cfg.input_size, "augment": True})
        datasets = {"train": train}
        if cfg.bn_recalibrate_images > 0:  # pseudo-labelled images as prediction sees them: whole, resized
            datasets["bn"] = ds.limit(cfg.bn_recalibrate_images).map_batches(
                segmenter_batch, batch_format="numpy", batch_size=32,
                fn_kwargs={"input_size": cfg.input_size, "augment": False})
        loop_config = {**C.to_dict(cfg), "num_classes": cmeta["num_classes"], "width": cmeta["width"],
                       "classes": cmeta["classes"], "n_train": n,
                       "classifier_dir": storage.absolute(cfg.model)}
        loop_config.pop("compute")
        result = training.fit(f"segmenter-{fp}", segmenter_loop.train_loop_per_worker, loop_config,
                              datasets, cfg.compute, cfg.out.rstrip("/") + "_ray_train",
                              cfg.max_failures)
        meta = training.export_model(result, cfg.out)
        history = training.history(result, meta)
        return {"images": n, "seconds": time.time() - t0, "metrics": meta["metrics"], "history": history}

    return run_stage("segmenter", cfg.out, fp, resume, body)
