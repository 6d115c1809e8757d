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


def post_in_actor(cfg: C.AttentionConfig) -> bool:
    """Whether Eqn 9-10 run inside the attention actors ("actor") or in CPU tasks after them ("tasks").

    auto: tasks when the actors hold GPUs. The post-processing is CPU work of a few times the network's on a GPU
    (Felzenszwalb segments: ~145 ms for a 500 x 375 photo here, jobs/bench/attention.py): inside a GPU actor the
    GPU waits for it; as tasks it spreads over every free CPU of the cluster while the GPU maps the next batch.
    On CPU the actors already use the cores, and a hand-over would only copy the maps."""
    return cfg.postprocess == "actor" or (cfg.postprocess == "auto" and not cfg.compute.use_gpu)


def _pseudo_rows(batch: dict, images: list[np.ndarray], maps: list[np.ndarray], method: Method) -> pa.Table:
    """PSEUDO rows of a batch from each image's attention map: Eqn 9 smoothing and Eqn 10 (pure but for I/O)."""
    rows: dict[str, list] = {n: [] for n in schema.PSEUDO.names}
    for i, att in enumerate(maps):
        label = int(batch["label"][i])
        mask, att = pseudo_label(att, images[i], label, method)
        rows["id"].append(batch["id"][i])
        rows["tag"].append(batch["tag"][i])
        rows["label"].append(label)
        rows["image"].append(batch["image"][i])
        rows["mask"].append(imaging.encode_png(mask))
        rows["attention"].append(imaging.encode_png((att * 255).round().astype(np.uint8)))
        rows["height"].append(att.shape[0])
        rows["width"].append(att.shape[1])
        rows["ignored"].append(float((mask == schema.IGNORE).mean()))
        rows["foreground"].append(float((mask == label).mean()))
    return pa.Table.from_pydict(rows, schema=schema.PSEUDO)


class AttentionMaps:
    """Actor: holds the classifier once; maps a batch of IMAGES rows to each image's attention (Eqn 5-8)."""

    def __init__(self, model_dir: str, cfg: C.AttentionConfig):
        self.device = actor_device(cfg.compute)
        self.model, _ = load_model(model_dir, self.device, "classifier")
        self.cfg, self.method = cfg, method_of(cfg)

    def maps(self, batch: dict) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(decoded images, their float32 attention maps at each image's size)."""
        images = [imaging.decode_rgb(b) for b in batch["image"]]
        labels = np.asarray(batch["label"], dtype=np.int64)
        return images, attention_maps(self.model, images, labels, self.cfg.input_size, self.device, self.method)

    def __call__(self, batch: dict) -> dict:
        """The batch's rows with `att` (float32 bytes, height x width) for the CPU tasks of _post_tasks."""
        _, maps = self.maps(batch)
        return {"id": batch["id"], "tag": batch["tag"], "label": batch["label"], "image": batch["image"],
                "att": np.array([a.astype(np.float32).tobytes() for a in maps], dtype=object),
                "height": np.array([a.shape[0] for a in maps]), "width": np.array([a.shape[1] for a in maps])}


class PseudoLabeler(AttentionMaps):
    """Actor: holds the classifier once; turns IMAGES rows into PSEUDO rows (maps and Eqn 9-10 in one place)."""

    def __call__(self, batch: dict) -> pa.Table:  # type: ignore[override]
        images, maps = self.maps(batch)
        return _pseudo_rows(batch, images, maps, self.method)


def _post_tasks(batch: dict, method: Method) -> pa.Table:
    """CPU task after AttentionMaps: decode the images again (cheaper to move than pixels) and run Eqn 9-10."""
    images = [imaging.decode_rgb(b) for b in batch["image"]]
    maps = [np.frombuffer(b, np.float32).reshape(int(h), int(w))
            for b, h, w in zip(batch["att"], batch["height"], batch["width"])]
    return _pseudo_rows(batch, images, maps, method)


def run(cfg: C.AttentionConfig, resume: bool = True) -> dict:
    """Pseudo labels for every image of cfg.images into cfg.out (PSEUDO schema)."""
    shards.require(cfg.images, "filtered image shards")
    shards.require(cfg.model, "classifier model")
    classes = list(shards.read_marker(cfg.images)["classes"])

    def body() -> dict:
        t0 = time.time()
        ds = usable_images(cfg.images, "filtered image shards", ["id", "tag", "label", "image"])
        kw = {"batch_format": "numpy", "fn_constructor_kwargs": {"model_dir": cfg.model, "cfg": cfg}}
        if post_in_actor(cfg):
            out = ds.map_batches(PseudoLabeler, **kw, **actor_pool(cfg.compute))
        else:  # the actors map, CPU tasks (as many as free CPUs allow) smooth and cut
            maps = ds.map_batches(AttentionMaps, **kw, **actor_pool(cfg.compute))
            out = maps.map_batches(_post_tasks, batch_format="numpy", fn_kwargs={"method": method_of(cfg)},
                                   batch_size=cfg.compute.inference_batch_size, num_cpus=1)
        write_stage(out, cfg.out, schema.PSEUDO)
        stats = shards.read_table(cfg.out, columns=["ignored", "foreground"])
        n = stats.num_rows
        return {"classes": classes, "images": n, "seconds": time.time() - t0,
                "mean_ignored": float(pc.mean(stats.column("ignored")).as_py() or 0) if n else 0.0,
                "mean_foreground": float(pc.mean(stats.column("foreground")).as_py() or 0) if n else 0.0}

    return run_stage("attention", cfg.out, declared_fingerprint("attention", cfg), resume, body)
