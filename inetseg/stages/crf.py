"""CRF stage: dense CRF (pydensecrf) over every prediction, in Ray Data tasks sized by crf.compute."""
from __future__ import annotations

import logging
import time

import pyarrow as pa

from inetseg import config as C
from inetseg import schema, shards
from inetseg.crf import refine_png
from inetseg.stages.common import data_context, declared_fingerprint, read_stage, run_stage, task_pool, write_stage

log = logging.getLogger("inetseg")


def _refine(batch: dict, cfg: C.CRFConfig) -> pa.Table:
    """PREDICTIONS rows with probs -> PREDICTIONS rows whose pred is the CRF labelling (probs dropped)."""
    preds = [refine_png(image, probs, cfg) for image, probs in zip(batch["image"], batch["probs"])]
    return pa.Table.from_pydict({
        "id": list(batch["id"]), "image": list(batch["image"]), "gt": list(batch["gt"]), "pred": preds,
        "probs": [None] * len(preds), "height": list(batch["height"]), "width": list(batch["width"]),
    }, schema=schema.PREDICTIONS)


def run(cfg: C.CRFConfig, resume: bool = True) -> dict:
    """Refine cfg.predictions into cfg.out: cfg.compute.num_actors tasks at once (see CRFConfig.compute)."""
    shards.require(cfg.predictions, "predictions")

    def body() -> dict:
        t0 = time.time()
        # No CPU reserved for the read, split, cast and write operators: with it the CRF tasks ran one at a time on
        # two CPUs (0.42 per core against a bare loop, jobs/bench/crf.py --source), and those need almost none.
        with data_context(op_resource_reservation_enabled=False):
            ds = read_stage(cfg.predictions, "predictions", block_rows=cfg.compute.inference_batch_size)
            out = ds.map_batches(_refine, batch_format="numpy", fn_kwargs={"cfg": cfg}, **task_pool(cfg.compute))
            write_stage(out, cfg.out, schema.PREDICTIONS, 500)
        return {"images": shards.count_rows(cfg.out), "seconds": time.time() - t0,
                "classes": shards.read_marker(cfg.predictions).get("classes", [])}

    return run_stage("crf", cfg.out, declared_fingerprint("crf", cfg), resume, body)
