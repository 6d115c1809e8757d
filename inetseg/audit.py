"""Measurement against the synthetic corpus's hidden ground truth: never an input to any stage.

The pipeline calls these only after a stage has finished, to report how good its output is
(pseudo-label mIoU, filter precision/recall). Nothing computed here flows back into training.
"""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from inetseg import imaging, masks, metrics, shards, storage
from inetseg.ingest.duplicates import usable_ids
from inetseg.ingest.listing import row_id

HIDDEN = "hidden/train_truth.parquet"  # relative to the corpus folder
NOISY = ("wrong_tag", "no_object")  # noise types whose tag is simply wrong


def load_truth(corpus: str) -> dict[str, dict]:
    """id -> {'noise', 'mask' (PNG bytes)} for every search image of a synthetic corpus."""
    path = storage.join(corpus, HIDDEN)
    fs, inner = storage.resolve(path)
    table = pq.read_table(inner, filesystem=fs, columns=["file", "noise", "mask"])
    search = storage.resolve(storage.join(corpus, "search"))[1]
    out = {}
    for f, noise, mask in zip(*(table.column(c).to_pylist() for c in ("file", "noise", "mask"))):
        out[row_id(storage.join(search, f))] = {"noise": noise, "mask": mask}
    return out


def pseudo_label_quality(pseudo: str, truth: dict[str, dict], classes: list[str]) -> dict:
    """mIoU of the pseudo labels against the hidden GT, plus precision on labelled pixels."""
    t = shards.read_table(pseudo, columns=["id", "mask"])
    n = len(classes) + 1
    cm = np.zeros((n, n + 1), np.int64)
    labelled = correct = total = 0
    matched = 0
    for pid, mbytes in zip(t.column("id").to_pylist(), t.column("mask").to_pylist()):
        if pid not in truth:
            continue
        matched += 1
        gt = masks.decode_mask(truth[pid]["mask"])
        pm = masks.decode_mask(mbytes)
        if pm.shape != gt.shape:
            pm = imaging.resize_labels(pm, *gt.shape)
        cm += metrics.confusion_matrix(gt, pm, n)
        valid = pm != 255
        labelled += int(valid.sum())
        correct += int((pm[valid] == gt[valid]).sum())
        total += pm.size
    summary = metrics.summarize(cm, ["background", *classes])
    return {"miou": summary["miou"], "per_class_iou": summary["per_class_iou"],
            "precision": correct / max(1, labelled), "ignored": 1 - labelled / max(1, total),
            "images": matched}


def attention_audit(cfg, meta: dict, truth: dict[str, dict], classes: list[str]) -> dict:
    """The attention stage's pseudo labels against the hidden truth."""
    return {"pseudo": pseudo_label_quality(cfg.out, truth, classes)}


def finetune_audit(cfg, meta: dict, truth: dict[str, dict], classes: list[str]) -> dict:
    """Each fine-tuning round's kept pseudo labels against the hidden truth (round1, round2, ...)."""
    return {f"round{r['round']}": pseudo_label_quality(storage.join(cfg.out, f"round{r['round']}", "pseudo"),
                                                       truth, classes) for r in meta.get("rounds", [])}


def removal_quality(ids: list[str], kept: set[str], truth: dict[str, dict]) -> dict:
    """Share of noisy images before/after, precision/recall of the removed ones, share of clean kept."""
    kept_mask = np.asarray([i in kept for i in ids], bool)
    noisy = np.asarray([truth.get(i, {}).get("noise") in NOISY for i in ids], bool)
    dropped = ~kept_mask
    tp = int((dropped & noisy).sum())
    return {
        "images_in": len(ids), "images_kept": int(kept_mask.sum()),
        "noise_before": float(noisy.mean()) if len(ids) else 0.0,
        "noise_after": float(noisy[kept_mask].mean()) if kept_mask.any() else 0.0,
        "precision": tp / max(1, int(dropped.sum())),
        "recall": tp / max(1, int(noisy.sum())),
        "clean_kept": float(kept_mask[~noisy].mean()) if (~noisy).any() else 0.0,
    }


def filter_quality(images_in: str, images_out: str, truth: dict[str, dict]) -> dict:
    """removal_quality of a whole filter run: its input table against the table it kept."""
    return removal_quality(usable_ids(images_in), set(usable_ids(images_out)), truth)
