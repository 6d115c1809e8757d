"""Evaluate stage: mIoU from a confusion matrix over a PREDICTIONS table, or over predicted mask files
against a mask folder or PASCAL VOC (255 ignored)."""
from __future__ import annotations

import logging
import time

import numpy as np
import ray

from inetseg import config as C
from inetseg import evalsets, masks, metrics, shards, storage, viz
from inetseg.stages.common import declared_fingerprint, read_stage, run_stage

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


def run(cfg: C.EvaluateConfig, resume: bool = True) -> dict:
    """Score cfg.predictions (and cfg.before_crf alongside, when set); writes cfg.out/metrics.json and returns
    it with the marker fields. With cfg.pred set, scores mask files instead (see run_files).

    Classes: cfg.classes, else the ones the predictions table was made with.
    """
    if cfg.pred:
        return run_files(cfg)
    shards.require(cfg.predictions, "predictions")
    classes = list(cfg.classes) or list(shards.read_marker(cfg.predictions).get("classes", []))
    if not classes:
        raise FileNotFoundError(f"predictions at {cfg.predictions} do not name their classes (give classes=...)")
    names = ["background", *classes]
    also = cfg.before_crf if cfg.before_crf and cfg.before_crf != cfg.predictions else ""

    def body() -> dict:
        t0 = time.time()
        cm, base = confusion(cfg.predictions, len(names))
        result = {**metrics.summarize(cm, names), "baseline": metrics.summarize(base, names),
                  "confusion": cm.tolist()}
        if also:
            result["before_crf"] = metrics.summarize(confusion(also, len(names))[0], names)
        result["seconds"] = time.time() - t0
        storage.write_json(storage.join(cfg.out, "metrics.json"), result)
        return result

    return run_stage("evaluate", cfg.out, declared_fingerprint("evaluate", cfg), resume,
                     body)


def _batch_pairs(batch: dict, lut: np.ndarray, num_data_ids: int, num_classes: int) -> dict:
    """Summed confusion of a batch of (gt, pred) files; a pair that fails is counted, not raised."""
    cm = np.zeros((num_classes, num_classes + 1), np.int64)
    errors = []
    for gt_path, pred_path in zip(batch["gt"], batch["pred"]):
        try:
            cm += evalsets.pair_confusion(str(gt_path), str(pred_path), lut, num_data_ids, num_classes)
        except (ValueError, OSError) as e:  # MaskError, DataSetError, an unreadable file
            errors.append(str(e))
    return {"cm": cm.reshape(1, -1), "failed": np.array([len(errors)]),
            "error": np.array([errors[0] if errors else ""])}


def file_confusion(pairs: list[tuple[evalsets.Item, str]], gt: evalsets.EvalSet, num_classes: int) -> np.ndarray:
    """Summed confusion over (gt item, prediction path) pairs through Ray Data; a failed pair is a DataSetError."""
    rows = [{"gt": item.mask, "pred": pred} for item, pred in pairs]
    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(64, len(rows) // 32)))
    parts = ds.map_batches(_batch_pairs, batch_format="numpy", batch_size=32,
                           fn_kwargs={"lut": gt.lut, "num_data_ids": len(gt.classes) + 1, "num_classes": num_classes})
    cm = np.zeros((num_classes, num_classes + 1), np.int64)
    failed, first = 0, ""
    for b in parts.iter_batches(batch_format="numpy", batch_size=None):
        cm += b["cm"].sum(0).reshape(cm.shape)
        failed += int(b["failed"].sum())
        first = first or next((str(e) for e in b["error"] if e), "")
    if failed:
        raise evalsets.DataSetError(first + (f" (and {failed - 1} more failed pairs)" if failed > 1 else ""))
    return cm


def run_files(cfg: C.EvaluateConfig) -> dict:
    """Score cfg.pred's mask files against cfg.gt; writes cfg.out/metrics.json and confusion.png.

    Always recomputed: mask folders carry no completion marker to prove they are unchanged, and out is
    written into, never cleared (it may sit beside the user's own files).
    """
    t0 = time.time()
    classes = evalsets.run_classes(cfg.pred, cfg.classes)
    gt = evalsets.open_set(cfg.gt, classes, cfg.split, cfg.others)
    pairs, missing = evalsets.match(gt.items, evalsets.files_by_stem(cfg.pred, evalsets.MASK_SUFFIXES),
                                    cfg.allow_missing)
    if missing:
        log.warning("evaluate: %d ground-truth masks have no prediction; scoring the other %d", missing, len(pairs))
    names = ["background", *classes]
    cm = file_confusion(pairs, gt, len(names))
    result = {**metrics.summarize(cm, names), "confusion": cm.tolist(), "classes": names, "images": len(pairs),
              "missing": missing, "seconds": time.time() - t0}
    storage.write_json(storage.join(cfg.out, "metrics.json"), result)
    storage.write_bytes(storage.join(cfg.out, "confusion.png"), viz.encode_png(viz.confusion_image(cm, names)))
    return result
