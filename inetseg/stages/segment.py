"""Segment stage: a trained segmenter over a user's own photos, in a Ray Data actor pool.

The driver lists photo paths and gathers one small row per photo; each actor reads its photos, runs the
net once per batch and writes that photo's files itself (atomically), so no image passes through the driver.
"""
from __future__ import annotations

import atexit
import dataclasses
import hashlib
import json
import logging
import posixpath
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import ray

from inetseg import config as C
from inetseg import imaging, masks, photos, schema, shards, storage, tracking, viz
from inetseg.crf import crf_labels
from inetseg.inference import predict_logits, single_class, upsample_probs
from inetseg.models.io import META_FILE, MODEL_FILE, load_model
from inetseg.stages.common import actor_device, actor_pool

log = logging.getLogger("inetseg")

MASKS, OVERLAYS, PROBS = "masks", "overlays", "probs"
STATE_FILE = "_segment.json"  # fingerprint of model + settings, so a resume never mixes two models' masks
ROW = pa.schema([("file", pa.string()), ("name", pa.string()), ("status", pa.string()),
                 ("reason", pa.string()), ("detail", pa.string()), ("height", pa.int32()),
                 ("width", pa.int32()), ("pixels", pa.list_(pa.int64()))])
_FETCHED: dict[tuple[str, str], str] = {}  # (pinned model URI, tracking URI) -> the local folder it was fetched to


def locate_model(cfg: C.SegmentConfig) -> C.SegmentConfig:
    """cfg naming its MLflow model as this process sees it now: the tracking URI resolved (an actor's working
    folder may differ), an alias as the version it points at (so every actor loads what the driver hashed)."""
    if not storage.is_model_uri(cfg.model):
        return cfg
    uri = tracking.resolve_uri(cfg.mlflow_uri)
    return dataclasses.replace(cfg, model=tracking.pinned(cfg.model, uri), mlflow_uri=uri)


def fetch_model(cfg: C.SegmentConfig) -> C.SegmentConfig:
    """cfg with model= a local folder: an MLflow model URI (models:/NAME@ALIAS, models:/NAME/VERSION, runs:/...)
    is downloaded first (model.pt + meta.json, once per process and version) into a temporary folder, so that
    every model loads one way. A URI that names no model: one-line FileNotFoundError."""
    if not storage.is_model_uri(cfg.model):
        return cfg
    cfg = locate_model(cfg)
    key = (cfg.model, cfg.mlflow_uri)
    if key not in _FETCHED:
        tmp = tempfile.mkdtemp(prefix="inetseg-model-")
        atexit.register(shutil.rmtree, tmp, True)
        _FETCHED[key] = tracking.download_model(*key, tmp)
        log.info("segment: model=%s (MLflow at %s) downloaded to %s", *key, _FETCHED[key])
    return dataclasses.replace(cfg, model=_FETCHED[key])


def read_model_meta(model: str) -> dict:
    """The segmenter folder's meta.json (one-line FileNotFoundError / ConfigError when it is not one)."""
    for fname in (MODEL_FILE, META_FILE):
        if not storage.exists(storage.join(model, fname)):
            raise FileNotFoundError(f"model={model} has no {fname} (expected a trained segmenter folder, "
                                    f"e.g. a pipeline run's segmenter/)")
    meta = storage.read_json(storage.join(model, META_FILE))
    if meta.get("kind", "segmenter") != "segmenter":
        raise C.ConfigError(f"model={model} holds a {meta.get('kind')}, not a segmenter")
    return meta


def class_names(cfg: C.SegmentConfig, meta: dict) -> list[str]:
    """Names of ids 1..K: classes=, else meta.json, else the classes of the run the model came from.

    A segmenter trained before meta.json carried `classes` sits in a pipeline run next to pseudo/,
    whose completion marker names them.
    """
    k = int(meta["num_classes"])
    pseudo = storage.join(posixpath.dirname(storage.absolute(cfg.model).rstrip("/")), "pseudo")
    names = cfg.classes or meta.get("classes") or (
        shards.read_marker(pseudo).get("classes") if shards.is_complete(pseudo) else None)
    if not names:
        raise C.ConfigError(f"model={cfg.model}: meta.json names no classes; pass classes=a,b,... ({k} names)")
    if len(names) != k:
        raise C.ConfigError(f"classes: the model has {k} classes, got {len(names)} names ({','.join(names)})")
    return list(names)


def network_side(cfg: C.SegmentConfig, meta: dict) -> int:
    """input_size=, else the side the segmenter was trained at."""
    side = cfg.input_size or int(meta.get("input_size", 0))
    if not side:
        raise C.ConfigError(f"model={cfg.model}: meta.json has no input_size; pass input_size=...")
    return side


def find_photos(cfg: C.SegmentConfig) -> tuple[list[str], list[str]]:
    """(photo paths, output names); an input without photos is a one-line error."""
    paths, root = photos.list_photos(cfg.images, exclude=cfg.out)
    if not paths:
        raise FileNotFoundError(f"images={cfg.images} holds no photos ({' '.join(imaging.IMAGE_SUFFIXES)})")
    return paths, photos.output_stems(paths, root)


def check(cfg: C.SegmentConfig) -> None:
    """Fail fast on a bad model or an empty photo folder (the CLI calls this before starting Ray)."""
    cfg = fetch_model(cfg)
    meta = read_model_meta(cfg.model)
    class_names(cfg, meta)
    network_side(cfg, meta)
    find_photos(cfg)


def fingerprint(cfg: C.SegmentConfig) -> str:
    """Hash of the model's weights and of every setting that changes what is written for a photo."""
    settings = {k: v for k, v in C.to_dict(cfg).items()
                if k not in ("model", "mlflow_uri", "images", "out", "compute")}
    h = hashlib.sha256(storage.read_bytes(storage.join(cfg.model, MODEL_FILE)))
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()[:16]


def finished(cfg: C.SegmentConfig) -> set[str]:
    """Output names whose every requested file exists (the mask is written last, so it marks completion)."""
    done = photos.finished_stems(storage.join(cfg.out, MASKS), ".png")
    done &= photos.finished_stems(storage.join(cfg.out, OVERLAYS), ".jpg")
    if cfg.probs:
        done &= photos.finished_stems(storage.join(cfg.out, PROBS), ".npy")
    return done


def start_output(cfg: C.SegmentConfig, names: list[str], resume: bool, source: str = "") -> set[str]:
    """Write classes.json and the settings fingerprint (and where the model came from: `source`, else its
    folder); the names already finished when resuming."""
    state_file = storage.join(cfg.out, STATE_FILE)
    fp = fingerprint(cfg)
    if resume and storage.exists(state_file) and storage.read_json(state_file).get("fingerprint") != fp:
        raise C.ConfigError(f"out={cfg.out} holds masks of another model or other settings; "
                            f"use another out= or --no-resume to redo every photo")
    model = source if storage.is_model_uri(source) else storage.absolute(cfg.model)
    storage.write_json(state_file, {"fingerprint": fp, "model": model})
    storage.write_text(storage.join(cfg.out, "classes.json"), json.dumps(names[1:]) + "\n")
    return finished(cfg) if resume else set()


class Segmentor:
    """Actor: holds the segmenter once; (file, name) rows -> files under out + one small row per photo."""

    def __init__(self, cfg: C.SegmentConfig, names: list[str], input_size: int):
        self.device = actor_device(cfg.compute)
        # Each actor fetches an MLflow model itself: the driver's download is on the driver's node only.
        self.model, _ = load_model(fetch_model(cfg).model, self.device, "segmenter")
        self.cfg, self.names, self.input_size = cfg, names, input_size

    def __call__(self, batch: dict) -> pa.Table:
        rows, images = [], []
        for path, name in zip(batch["file"], batch["name"]):
            row = {"file": str(path), "name": str(name), "status": "ok", "reason": "", "detail": ""}
            try:
                images.append(imaging.decode_rgb(storage.read_bytes(str(path)), self.cfg.max_pixels))
            except imaging.ImageError as e:  # a bad photo is a counted skip, never a failed run
                row.update(status="failed", reason=e.reason, detail=e.detail)
            except OSError as e:
                row.update(status="failed", reason="unreadable", detail=str(e)[:200])
            rows.append(row)
        ok = [r for r in rows if r["status"] == "ok"]
        if images:
            logits = predict_logits(self.model, images, self.input_size, self.device, self.cfg.flip)
            for row, image, lg in zip(ok, images, logits):
                row["height"], row["width"] = image.shape[:2]
                # One photo's full-size probabilities at a time: they are the big array here.
                probs = upsample_probs(lg, *image.shape[:2])
                row["pixels"] = self.write(row["name"], image, single_class(probs) if self.cfg.one_class else probs)
        return pa.Table.from_pylist(rows, schema=ROW)

    def write(self, name: str, image: np.ndarray, probs: np.ndarray) -> list[int]:
        """Write the photo's probs (if asked), overlay, then mask; returns its pixel count per class id."""
        cfg = self.cfg
        labels = crf_labels(image, probs, cfg.crf_params) if cfg.crf else probs.argmax(0).astype(np.uint8)
        if cfg.probs:
            storage.write_bytes(storage.join(cfg.out, PROBS, name + ".npy"),
                                schema.encode_probs(probs.astype(np.float16)))
        shown = viz.overlay(image, labels, self.names, cfg.overlay_alpha)
        storage.write_bytes(storage.join(cfg.out, OVERLAYS, name + ".jpg"),
                            imaging.encode_jpeg(shown, cfg.jpeg_quality))
        storage.write_bytes(storage.join(cfg.out, MASKS, name + ".png"),
                            masks.encode_palette_png(labels.astype(np.uint8)))
        return np.bincount(labels.ravel(), minlength=len(self.names)).tolist()


def tally(batches: Iterable[pa.Table], n_ids: int) -> tuple[int, np.ndarray, list[dict]]:
    """(photos segmented, pixels per class id, failure records) over the actors' rows, kept as counts only."""
    done, pixels, failures = 0, np.zeros(n_ids, np.int64), []
    for table in batches:
        for r in table.to_pylist():
            if r["status"] == "ok":
                done, pixels = done + 1, pixels + r["pixels"]
            else:
                failures.append({k: r[k] for k in ("file", "name", "reason", "detail")})
    return done, pixels, sorted(failures, key=lambda r: r["file"])


def summarize(done: int, pixels: np.ndarray, failures: list[dict], names: list[str], found: int,
              seconds: float) -> dict:
    """Counts, failures by reason and each class's share of the pixels segmented in this run."""
    total = max(1, int(pixels.sum()))
    return {"images": found, "segmented": done, "reused": found - done - len(failures), "failed": len(failures),
            "failed_by_reason": dict(Counter(r["reason"] for r in failures)), "seconds": round(seconds, 2),
            "classes": names[1:], "pixel_share": {n: round(int(c) / total, 6) for n, c in zip(names, pixels)}}


def run(cfg: C.SegmentConfig, resume: bool = True) -> dict:
    """Segment every photo of cfg.images into cfg.out; returns (and writes) summary.json."""
    t0, cfg = time.time(), locate_model(cfg)
    local = fetch_model(cfg)
    meta = read_model_meta(local.model)
    names = ["background", *class_names(local, meta)]
    side = network_side(local, meta)
    paths, stems = find_photos(cfg)
    already = start_output(local, names, resume, cfg.model)
    todo = [{"file": p, "name": s} for p, s in zip(paths, stems) if s not in already]
    log.info("segment: %d photos, %d already done, %d to segment", len(paths), len(paths) - len(todo), len(todo))
    batches: Iterable[pa.Table] = []
    if todo:
        ds = ray.data.from_items(todo).map_batches(
            Segmentor, batch_format="numpy", fn_constructor_kwargs={"cfg": cfg, "names": names, "input_size": side},
            **actor_pool(cfg.compute))
        batches = ds.iter_batches(batch_format="pyarrow", batch_size=None)
    done, pixels, failures = tally(batches, len(names))
    for r in failures:
        log.warning("segment: skipped %s: %s %s", r["file"], r["reason"], r["detail"])
    summary = summarize(done, pixels, failures, names, len(paths), time.time() - t0)
    storage.write_json(storage.join(cfg.out, "failed.json"), failures)
    storage.write_json(storage.join(cfg.out, "summary.json"), summary)
    return summary
