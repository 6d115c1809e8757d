"""Attention stage: CAM + excitation backprop (Eqn 5-8), segment smoothing (Eqn 9), trimap (Eqn 10) ->
pseudo-label shards, in a Ray Data actor pool (the classifier loaded once per actor)."""
from __future__ import annotations

import logging
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from inetseg import config as C
from inetseg import imaging, schema, shards
from inetseg.attention.maps import Method, attention_maps, pseudo_label
from inetseg.models.io import load_model
from inetseg.stages.common import (
    actor_device,
    actor_pool,
    declared_fingerprint,
    run_stage,
    usable_images,
    write_stage,
)

log = logging.getLogger("inetseg")


def method_of(cfg: C.AttentionConfig) -> Method:
    """The attention model's settings: the config's fields of the same names (checked when it was built)."""
    return C.subset(Method, cfg)


class PseudoLabeler:
    """Actor: holds the classifier once; turns IMAGES rows into PSEUDO rows."""

    def __init__(self, model_dir: str, cfg: C.AttentionConfig):
        self.device = actor_device(cfg.compute)
        self.model, _ = load_model(model_dir, self.device, "classifier")
        self.cfg, self.method = cfg, method_of(cfg)

    def __call__(self, batch: dict) -> pa.Table:
        images = [imaging.decode_rgb(b) for b in batch["image"]]
        labels = np.asarray(batch["label"], dtype=np.int64)
        maps = attention_maps(self.model, images, labels, self.cfg.input_size, self.device, self.method)
        rows: dict[str, list] = {n: [] for n in schema.PSEUDO.names}
        for i, (att, label) in enumerate(zip(maps, labels)):
            mask, att = pseudo_label(att, images[i], int(label), self.method)
            rows["id"].append(batch["id"][i])
            rows["tag"].append(batch["tag"][i])
            rows["label"].append(int(label))
            rows["image"].append(batch["image"][i])
            rows["mask"].append(imaging.encode_png(mask))
            rows["attention"].append(imaging.encode_png((att * 255).round().astype(np.uint8)))
            rows["height"].append(att.shape[0])
            rows["width"].append(att.shape[1])
            rows["ignored"].append(float((mask == schema.IGNORE).mean()))
            rows["foreground"].append(float((mask == label).mean()))
        return pa.Table.from_pydict(rows, schema=schema.PSEUDO)


def run(cfg: C.AttentionConfig, resume: bool = True) -> dict:
    """Pseudo labels for every image of cfg.images into cfg.out (PSEUDO schema)."""
    shards.require(cfg.images, "filtered image shards")
    shards.require(cfg.model, "classifier model")
    classes = list(shards.read_marker(cfg.images)["classes"])

    def body() -> dict:
        t0 = time.time()
        ds = usable_images(cfg.images, "filtered image shards", ["id", "tag", "label", "image"])
        out = ds.map_batches(PseudoLabeler, batch_format="numpy",
                             fn_constructor_kwargs={"model_dir": cfg.model, "cfg": cfg},
                             **actor_pool(cfg.compute))
        write_stage(out, cfg.out, schema.PSEUDO)
        stats = shards.read_table(cfg.out, columns=["ignored", "foreground"])
        n = stats.num_rows
        return {"classes": classes, "images": n, "seconds": time.time() - t0,
                "mean_ignored": float(pc.mean(stats.column("ignored")).as_py() or 0) if n else 0.0,
                "mean_foreground": float(pc.mean(stats.column("foreground")).as_py() or 0) if n else 0.0}

    return run_stage("attention", cfg.out, declared_fingerprint("attention", cfg), resume, body)
