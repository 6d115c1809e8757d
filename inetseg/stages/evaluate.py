"""Evaluate stage: mIoU from a confusion matrix over a PREDICTIONS table (255 ignored)."""
from __future__ import annotations

import logging
import time

import numpy as np

from inetseg import config as C
from inetseg import imaging, metrics, shards, storage
from inetseg.stages.common import read_stage, run_stage, stage_fingerprint

log = logging.getLogger("inetseg")


def _batch_confusion(batch: dict, num_classes: int) -> dict:
    """Confusion matrices of one batch: the predictions and the all-background baseline."""
    cm = np.zeros((num_classes, num_classes + 1), np.int64)
    base = np.zeros_like(cm)
    for gt_bytes, pred_bytes in zip(batch["gt"], batch["pred"]):
        if gt_bytes is None:  # unlabelled input: nothing to score
            continue
        gt = masks.decode_mask(gt_bytes)
        pred = masks.decode_mask(pred_bytes)
        cm += metrics.confusion_matrix(gt, pred, num_classes)
        base += metrics.confusion_matrix(gt, np.zeros_like(gt), num_classes)
    return {"cm": cm.reshape(1, -1), "base": base.reshape(1, -1)}


def confusion(predictions: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Summed (model, baseline) confusion matrices over a whole predictions table."""
    ds = read_stage(predictions, "predictions", columns=["gt", "pred"])
    parts = ds.map_batches(_batch_confusion, batch_format="numpy", batch_size=32,
                           fn_kwargs={"num_classes": num_classes})
    shape = (num_classes, num_classes + 1)
    cm = np.zeros(shape, np.int64)
    base = np.zeros_like(cm)
    for b in parts.iter_batches(batch_format="numpy", batch_size=None):
        cm += b["cm"].sum(0).reshape(shape)
        base += b["base"].sum(0).reshape(shape)
    return cm, base


def run(cfg: C.EvaluateConfig, classes: list[str] | None = None, resume: bool = True, extra: dict | None = None) -> dict:
    """Score cfg.predictions; writes cfg.out/metrics.json and returns it with the marker fields.

    `extra` names further prediction tables to score alongside (e.g. {'no_crf': path}).
    """
    shards.require(cfg.predictions, "predictions")
    if classes is None:
        classes = list(shards.read_marker(cfg.predictions).get("classes", []))
        if not classes:
            raise FileNotFoundError(f"predictions at {cfg.predictions} do not name their classes")
    names = ["background", *classes]

    def body() -> dict:
        t0 = time.time()
        cm, base = confusion(cfg.predictions, len(names))
        result = {**metrics.summarize(cm, names), "baseline": metrics.summarize(base, names),
                  "confusion": cm.tolist()}
        for key, path in (extra or {}).items():
            result[key] = metrics.summarize(confusion(path, len(names))[0], names)
        result["seconds"] = time.time() - t0
        storage.write_json(storage.join(cfg.out, "metrics.json"), result)
        return result

    inputs = [cfg.predictions, *(extra or {}).values()]
    return run_stage("evaluate", cfg.out, stage_fingerprint(cfg, *inputs), resume, body)
