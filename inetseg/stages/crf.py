"""CRF stage: dense CRF (pydensecrf) over every prediction, in parallel Ray Data tasks."""
from __future__ import annotations

import logging
import time

import pyarrow as pa

from inetseg import config as C
from inetseg import imaging, schema, shards
from inetseg.crf import crf_labels
from inetseg.stages.common import declared_fingerprint, read_stage, run_stage, write_stage

log = logging.getLogger("inetseg")


def _refine(batch: dict, cfg: C.CRFConfig) -> pa.Table:
    """PREDICTIONS rows with probs -> PREDICTIONS rows whose pred is the CRF labelling."""
    preds = []
    for img_bytes, probs in zip(batch["image"], batch["probs"]):
        image = imaging.decode_rgb(img_bytes)
        preds.append(imaging.encode_png(crf_labels(image, schema.decode_probs(probs).astype("float32"), cfg)))
    return pa.Table.from_pydict({
        "id": list(batch["id"]), "image": list(batch["image"]), "gt": list(batch["gt"]), "pred": preds,
        "probs": [None] * len(preds), "height": list(batch["height"]), "width": list(batch["width"]),
    }, schema=schema.PREDICTIONS)


def run(cfg: C.CRFConfig, resume: bool = True) -> dict:
    """Refine cfg.predictions into cfg.out (one CPU per task: pydensecrf is single-threaded)."""
    shards.require(cfg.predictions, "predictions")

    def body() -> dict:
        t0 = time.time()
        ds = read_stage(cfg.predictions, "predictions")
        out = ds.map_batches(_refine, batch_format="numpy", batch_size=8, num_cpus=1,
                             fn_kwargs={"cfg": cfg})
        write_stage(out, cfg.out, schema.PREDICTIONS, 500)
        return {"images": shards.count_rows(cfg.out), "seconds": time.time() - t0,
                "classes": shards.read_marker(cfg.predictions).get("classes", [])}

    return run_stage("crf", cfg.out, declared_fingerprint("crf", cfg), resume, body)
