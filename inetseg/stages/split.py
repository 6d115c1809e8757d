"""Split stage: the filtered images cut by a hash of their id into train/, heldout/ (online fine-tuning labels the
held-out share with the first segmenter, which never saw it) and, with val_share > 0, val/ (nothing trains on it:
`inetseg tune` scores its trials there)."""
from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from inetseg import config as C
from inetseg import filtering, finetune, schema, shards
from inetseg.ingest.duplicates import usable_rows
from inetseg.stages.common import declared_fingerprint, filter_ids, read_stage, run_stage, write_stage


def _share(ids: pa.ChunkedArray, share: float, salt: str) -> np.ndarray:
    """finetune.held_out over an Arrow id column, a chunk at a time (no list of every id on the driver)."""
    parts = [finetune.held_out(chunk.to_pylist(), share, salt=salt) for chunk in ids.chunks]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=bool)


def run(cfg: C.SplitConfig, resume: bool = True) -> dict:
    """Write the usable rows of cfg.images into out/train, out/heldout and out/val (IMAGES tables with their own
    markers; heldout/ and val/ only when their share is > 0). An image in both hash shares goes to val/."""
    shards.require(cfg.images, "filtered image shards")
    fp = declared_fingerprint("split", cfg)

    def body() -> dict:
        t0 = time.time()
        ids = usable_rows(cfg.images, ["id"]).column("id")  # Arrow: strings only a chunk at a time below
        val = _share(ids, cfg.val_share, "val")
        held = _share(ids, cfg.share, "finetune") & ~val
        classes = list(shards.read_marker(cfg.images)["classes"])
        counts = {}
        tables = filtering.split_tables(cfg.out)
        parts = [("train", ~held & ~val)] + [(n, k) for n, k, share in (("heldout", held, cfg.share),
                                                                          ("val", val, cfg.val_share)) if share > 0]
        for name, keep in parts:
            path = tables[name]
            chosen = pc.filter(ids, pa.array(keep)).combine_chunks()
            shards.prepare(path)
            ds = read_stage(cfg.images, "filtered image shards").map_batches(
                filter_ids, batch_format="pyarrow", fn_kwargs={"ids": chosen, "keep": True})
            write_stage(ds, path, schema.IMAGES)
            # The split tables are IMAGES tables in their own right: the stages after read their markers.
            shards.mark_complete(path, fp, {"classes": classes, "ok": len(chosen), "total": len(chosen),
                                                   "failed": {}})
            counts[name] = len(chosen)
        return {"classes": classes, **counts, "seconds": time.time() - t0}

    return run_stage("split", cfg.out, fp, resume, body)
