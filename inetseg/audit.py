"""Measurement against the synthetic corpus's hidden ground truth: never an input to any stage.

The pipeline calls these only after a stage has finished, to report how good its output is
(pseudo-label mIoU, filter precision/recall). Nothing computed here flows back into training.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from inetseg import imaging, masks, metrics, storage
from inetseg.ingest.duplicates import usable_rows
from inetseg.ingest.listing import row_id

HIDDEN = "hidden/train_truth.parquet"  # relative to the corpus folder
NOISY = ("wrong_tag", "no_object")  # noise types whose tag is simply wrong


TRUTH = pa.schema([("id", pa.string()), ("noise", pa.string()), ("mask", pa.binary())])


def load_truth_table(corpus: str) -> pa.Table:
    """The hidden truth of a synthetic corpus's search images as one Arrow table (id, noise, mask PNG)."""
    path = storage.join(corpus, HIDDEN)
    fs, inner = storage.resolve(path)
    table = pq.read_table(inner, filesystem=fs, columns=["file", "noise", "mask"])
    search = storage.resolve(storage.join(corpus, "search"))[1]
    ids = pa.array([row_id(storage.join(search, f)) for f in table.column("file").to_pylist()], pa.string())
    return pa.Table.from_arrays([ids, table.column("noise").cast(pa.string()), table.column("mask")], schema=TRUTH)


def load_truth(corpus: str) -> dict[str, dict]:
    """id -> {'noise', 'mask' (PNG bytes)} for every search image of a synthetic corpus (small corpora and benches;
    the pipeline keeps the table: truth_table)."""
    t = load_truth_table(corpus)
    return {i: {"noise": n, "mask": m} for i, n, m in zip(*(t.column(c).to_pylist() for c in TRUTH.names))}


def truth_table(truth: dict[str, dict] | pa.Table) -> pa.Table:
    """The TRUTH table of a truth given as a dict (the benches build theirs from mask files) or already one."""
    if isinstance(truth, pa.Table):
        return truth
    ids = list(truth)
    return pa.Table.from_pydict({"id": ids, "noise": [truth[i].get("noise") for i in ids],
                                 "mask": [truth[i].get("mask") for i in ids]}, schema=TRUTH)


COUNTS = pa.schema([("cm", pa.list_(pa.int64())), ("labelled", pa.int64()), ("correct", pa.int64()),
                    ("total", pa.int64()), ("matched", pa.int64())])


def pseudo_counts(batch: pa.Table, truth: pa.Table, n: int) -> pa.Table:
    """One batch of pseudo labels (id, mask) against the truth's masks -> one COUNTS row (confusion matrix flat,
    labelled, correct and total pixels, images matched): the sums over batches give pseudo_quality."""
    cm = np.zeros((n, n + 1), np.int64)
    labelled = correct = total = matched = 0
    at = pc.index_in(batch.column("id"), value_set=truth.column("id")).to_pylist()
    truth_masks = truth.column("mask")
    for row, mbytes in zip(at, batch.column("mask").to_pylist()):
        gbytes = truth_masks[row].as_py() if row is not None else None
        if gbytes is None:  # not in the truth, or an image without a mask
            continue
        matched += 1
        gt = masks.decode_mask(gbytes)
        pm = masks.decode_mask(mbytes)
        if pm.shape != gt.shape:
            pm = imaging.resize_labels(pm, *gt.shape)
        cm += metrics.confusion_matrix(gt, pm, n)
        valid = pm != 255
        labelled += int(valid.sum())
        correct += int((pm[valid] == gt[valid]).sum())
        total += pm.size
    return pa.Table.from_pydict({"cm": [cm.ravel().tolist()], "labelled": [labelled], "correct": [correct],
                                 "total": [total], "matched": [matched]}, schema=COUNTS)


def pseudo_quality(counts: pa.Table, classes: list[str]) -> dict:
    """mIoU of the pseudo labels against the hidden GT, precision on labelled pixels, share ignored: from the
    COUNTS rows of every batch."""
    n = len(classes) + 1
    cm = np.asarray(counts.column("cm").to_pylist(), np.int64).reshape(-1, n, n + 1).sum(0) if counts.num_rows \
        else np.zeros((n, n + 1), np.int64)
    labelled, correct, total, matched = (int(pc.sum(counts.column(c)).as_py() or 0)
                                         for c in ("labelled", "correct", "total", "matched"))
    summary = metrics.summarize(cm, ["background", *classes])
    return {"miou": summary["miou"], "per_class_iou": summary["per_class_iou"],
            "precision": correct / max(1, labelled), "ignored": 1 - labelled / max(1, total), "images": matched}


def removal_quality(ids: pa.Array | pa.ChunkedArray, kept: pa.Array | pa.ChunkedArray, truth: pa.Table) -> dict:
    """Share of noisy images before/after, precision/recall of the removed ones, share of clean kept (Arrow
    arrays of ids in and kept: no per-image object)."""
    kept_mask = pc.is_in(ids, value_set=kept).to_numpy(zero_copy_only=False).astype(bool)
    noisy = pc.fill_null(pc.is_in(ids, value_set=pc.filter(truth.column("id"), pc.is_in(
        truth.column("noise"), value_set=pa.array(NOISY)))), False).to_numpy(zero_copy_only=False).astype(bool)
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


def filter_quality(images_in: str, images_out: str, truth: dict[str, dict] | pa.Table) -> dict:
    """removal_quality of a whole filter run: its input table against the table it kept."""
    return removal_quality(usable_rows(images_in, ["id"]).column("id"), usable_rows(images_out, ["id"]).column("id"),
                           truth_table(truth))
