"""Attention stage: forward CAM (Eqn 5) of the tag's class -> trimap (Eqn 10) -> pseudo-label shards."""
from __future__ import annotations

import logging
import time

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from inetseg import config as C
from inetseg import imaging, schema, shards
from inetseg.attention.cam import forward_cam, normalise_map
from inetseg.attention.trimap import trimap
from inetseg.models.classifier import features
from inetseg.stages.common import (actor_pool, run_stage, set_threads, stage_fingerprint, torch_device,
                                    usable_images, write_stage)
from inetseg.stages.filter import load_classifier
from inetseg.train.data import normalise

log = logging.getLogger("inetseg")


def attention_maps(model: torch.nn.Module, images: list[np.ndarray], labels: np.ndarray,
                   input_size: int, device: torch.device) -> list[np.ndarray]:
    """Normalised CAM of each image's label, at each image's own size (float32 H x W in [0, 1])."""
    x = normalise(np.stack([imaging.resize_square(im, input_size) for im in images]))
    with torch.no_grad():
        feats = features(model, torch.from_numpy(x).to(device))
        cam = forward_cam(feats["inception5b"].float(), model.fc.weight.float(),
                          torch.as_tensor(labels - 1, dtype=torch.long, device=device))
        cam = normalise_map(cam).cpu().numpy()  # N x h x w, each map's max is 1
    return [cv2.resize(c, (im.shape[1], im.shape[0]), interpolation=cv2.INTER_LINEAR)
            for c, im in zip(cam, images)]


class PseudoLabeler:
    """Actor: holds the classifier once; turns IMAGES rows into PSEUDO rows."""

    def __init__(self, model_dir: str, cfg: C.AttentionConfig):
        set_threads(cfg.compute)
        self.device = torch_device(cfg.compute.use_gpu)
        self.model, _ = load_classifier(model_dir, self.device)
        self.cfg = cfg

    def __call__(self, batch: dict) -> pa.Table:
        images = [imaging.decode_rgb(b) for b in batch["image"]]
        labels = np.asarray(batch["label"], dtype=np.int64)
        maps = attention_maps(self.model, images, labels, self.cfg.input_size, self.device)
        rows: dict[str, list] = {n: [] for n in schema.PSEUDO.names}
        for i, (att, label) in enumerate(zip(maps, labels)):
            mask = trimap(att, int(label), self.cfg.delta_object, self.cfg.delta_background)
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

    return run_stage("attention", cfg.out, stage_fingerprint(cfg, cfg.images, cfg.model), resume, body)
