"""Predict stage: the trained segmenter over a TEST table, in a Ray Data actor pool."""
from __future__ import annotations

import logging
import time

import numpy as np
import pyarrow as pa

from inetseg import config as C
from inetseg import imaging, schema, shards
from inetseg.inference import predict_probs
from inetseg.models.io import load_model
from inetseg.stages.common import (
    actor_device,
    actor_pool,
    declared_fingerprint,
    read_stage,
    run_stage,
    write_stage,
)

log = logging.getLogger("inetseg")


class Predictor:
    """Actor: holds the segmenter once; TEST rows -> PREDICTIONS rows."""

    def __init__(self, model_dir: str, cfg: C.PredictConfig):
        self.device = actor_device(cfg.compute)
        self.model, _ = load_model(model_dir, self.device, "segmenter")
        self.cfg = cfg

    def __call__(self, batch: dict) -> pa.Table:
        images = [imaging.decode_rgb(b) for b in batch["image"]]
        probs = predict_probs(self.model, images, self.cfg.input_size, self.device, self.cfg.flip, self.cfg.one_class)
        preds = [imaging.encode_png(p.argmax(0).astype(np.uint8)) for p in probs]
        return pa.Table.from_pydict({
            "id": list(batch["id"]), "image": list(batch["image"]), "gt": list(batch["mask"]),
            "pred": preds, "probs": [schema.encode_probs(p.astype(np.float16)) for p in probs],
            "height": [im.shape[0] for im in images], "width": [im.shape[1] for im in images],
        }, schema=schema.PREDICTIONS)


# A PREDICTIONS row carries its float16 probabilities (K x H x W x 2 bytes: 7.9 MB for VOC's 21 classes at
# 500 x 375), and a Parquet file is read by one task as one block: at 500 rows a file the CRF's read of the paper's
# test split held ~4 GB per task. 32 rows keep a read under ~250 MB there; on CamVid's 120-photo CRF bench, files
# of 16 rows against one file: 3.6-3.9 against 3.1-3.5 images/s, peak RSS of the Ray workers 2.7 against 4.3 GiB.
ROWS_PER_FILE = 32


def run(cfg: C.PredictConfig, resume: bool = True) -> dict:
    """Predict every image of cfg.test into cfg.out."""
    shards.require(cfg.test, "test table")
    shards.require(cfg.model, "segmenter model")

    def body() -> dict:
        t0 = time.time()
        ds = read_stage(cfg.test, "test table", block_rows=cfg.compute.inference_batch_size)
        out = ds.map_batches(Predictor, batch_format="numpy",
                             fn_constructor_kwargs={"model_dir": cfg.model, "cfg": cfg},
                             **actor_pool(cfg.compute))
        write_stage(out, cfg.out, schema.PREDICTIONS, ROWS_PER_FILE)
        return {"images": shards.count_rows(cfg.out), "seconds": time.time() - t0,
                "classes": shards.read_marker(cfg.test).get("classes", [])}

    return run_stage("predict", cfg.out, declared_fingerprint("predict", cfg), resume, body)
