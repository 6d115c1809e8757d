"""Split stage: the filtered images cut in two by a hash of their id, train/ and heldout/ (online fine-tuning
labels the held-out share with the first segmenter, which never saw it)."""
from __future__ import annotations

import time

import pyarrow as pa

from inetseg import config as C
from inetseg import filtering, finetune, schema, shards
from inetseg.ingest.duplicates import usable_ids
from inetseg.stages.common import declared_fingerprint, filter_ids, read_stage, run_stage, write_stage


def run(cfg: C.SplitConfig, resume: bool = True) -> dict:
    """Write the usable rows of cfg.images into out/train and out/heldout (IMAGES tables with their own markers)."""
    shards.require(cfg.images, "filtered image shards")
    fp = declared_fingerprint("split", cfg)

    def body() -> dict:
        t0 = time.time()
        ids = usable_ids(cfg.images)
        held = finetune.held_out(ids, cfg.share)
        classes = list(shards.read_marker(cfg.images)["classes"])
        counts = {}
        tables = filtering.split_tables(cfg.out)
        for name, keep in (("train", ~held), ("heldout", held)):
            path = tables[name]
            chosen = pa.array([i for i, k in zip(ids, keep) if k], pa.string())
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
