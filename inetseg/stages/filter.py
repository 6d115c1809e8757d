"""Filter stage: score every image in a Ray Data actor pool, drop noisy ones by the paper's rule."""
from __future__ import annotations

import logging
import time
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
import torch

from inetseg import config as C
from inetseg import filtering, schema, shards, storage
from inetseg.models.classifier import build_classifier
from inetseg.stages import training
from inetseg.stages.common import (actor_pool, read_stage, run_stage, set_threads, stage_fingerprint, torch_device,
                                    usable_images, write_stage)
from inetseg.train.data import classifier_batch

log = logging.getLogger("inetseg")


def load_classifier(model_dir: str, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """The exported classifier (eval mode, on `device`) and its meta."""
    meta = storage.read_json(storage.join(model_dir, "meta.json"))
    model = build_classifier(meta["num_classes"], meta["width"])
    model.load_state_dict(torch.load(training.local_copy(model_dir), map_location="cpu"))
    return model.to(device).eval(), meta


class Scorer:
    """Actor: holds the classifier once, scores batches of IMAGES rows (Eqn 13-15 inputs)."""

    def __init__(self, model_dir: str, compute: C.ComputeConfig, rule: dict, round_: int):
        set_threads(compute)
        self.device = torch_device(compute.use_gpu)
        self.model, meta = load_classifier(model_dir, self.device)
        self.input_size = meta["input_size"]
        self.rule, self.round = rule, round_

    def __call__(self, batch: dict) -> pa.Table:
        x = classifier_batch(batch, self.input_size, augment=False)["x"]
        with torch.no_grad():
            probs = torch.softmax(self.model(torch.from_numpy(x).to(self.device)).float(), 1).cpu().numpy()
        labels = np.asarray(batch["label"])
        p_tag, rank = filtering.tag_scores(probs, labels)
        kept = filtering.keep_mask(p_tag, rank, **self.rule)
        return pa.Table.from_pydict({
            "id": list(batch["id"]), "tag": list(batch["tag"]), "label": labels.astype(np.int16),
            "p_tag": p_tag, "tag_rank": rank, "probs": list(probs.astype(np.float32)),
            "kept": kept, "round": np.full(len(kept), self.round, np.int8),
        }, schema=schema.SCORES)


_KEPT: dict = {}


def _only_kept(batch: pa.Table, kept_ref: ray.ObjectRef) -> pa.Table:
    """Keep the rows whose id survived (the id set is fetched once per worker process)."""
    key = kept_ref.hex()
    if key not in _KEPT:
        _KEPT.clear()
        _KEPT[key] = pa.array(ray.get(kept_ref))
    return batch.filter(pc.is_in(batch.column("id"), value_set=_KEPT[key]))


def run(cfg: C.FilterConfig, resume: bool = True, round_: int = 1) -> dict:
    """Write cfg.out/scores (every ok image) and cfg.out/images (the kept ones, IMAGES schema)."""
    shards.require(cfg.images, "image shards")
    shards.require(cfg.model, "classifier model")
    classes = list(shards.read_marker(cfg.images)["classes"])

    def body() -> dict:
        t0 = time.time()
        scores_dir, images_dir = storage.join(cfg.out, "scores"), storage.join(cfg.out, "images")
        ds = usable_images(cfg.images, "image shards", ["id", "tag", "label", "image"])
        rule = {"rule": cfg.rule, "threshold": cfg.threshold, "top_k": cfg.top_k}
        scored = ds.map_batches(Scorer, batch_format="numpy",
                                fn_constructor_kwargs={"model_dir": cfg.model, "compute": cfg.compute,
                                                       "rule": rule, "round_": round_},
                                **actor_pool(cfg.compute))
        write_stage(scored, scores_dir, schema.SCORES)
        scores = shards.read_table(scores_dir, columns=["id", "tag", "kept"])
        kept_ids = pc.filter(scores.column("id"), scores.column("kept")).to_pylist()
        kept_ref = ray.put(kept_ids)
        images = read_stage(cfg.images, "image shards").map_batches(
            _only_kept, batch_format="pyarrow", fn_kwargs={"kept_ref": kept_ref})
        write_stage(images, images_dir, schema.IMAGES)
        per_tag_in = Counter(scores.column("tag").to_pylist())
        per_tag_out = Counter(pc.filter(scores.column("tag"), scores.column("kept")).to_pylist())
        counts = {"in": scores.num_rows, "kept": len(kept_ids), "dropped": scores.num_rows - len(kept_ids),
                  "per_tag": {t: {"in": per_tag_in[t], "kept": per_tag_out.get(t, 0)} for t in sorted(per_tag_in)}}
        # The kept-image table is itself a finished stage output that later stages can require.
        shards.mark_complete(images_dir, "filtered", {"classes": classes, "ok": len(kept_ids),
                                                      "total": len(kept_ids), "failed": {}})
        shards.mark_complete(scores_dir, "filtered", {"rows": scores.num_rows})
        return {"classes": classes, "round": round_, "rule": rule, "seconds": time.time() - t0, **counts}

    return run_stage("filter", cfg.out, stage_fingerprint(cfg, cfg.images, cfg.model), resume, body)
