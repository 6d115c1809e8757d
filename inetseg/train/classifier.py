"""The classifier (GoogLeNet, weights=None) on the tagged images: its datasets, its per-worker loop, its fit."""
from __future__ import annotations

import logging
import time

import numpy as np
import pyarrow as pa
import ray
import ray.train
import ray.train.torch
import torch
import torch.nn.functional as F

from inetseg import config as C
from inetseg import filtering, shards, storage
from inetseg.ingest.duplicates import usable_rows
from inetseg.models.classifier import build_classifier
from inetseg.models.io import META_FILE, MODEL_FILE, local_model_file
from inetseg.stages.common import usable_images
from inetseg.train import trainer, worker
from inetseg.train.data import classifier_batch, decode_batch, holdout_side, to_input

log = logging.getLogger("inetseg")


def image_dataset(path: str, folds: int = 0, fold: int = -1, keep_fold: bool = False) -> ray.data.Dataset:
    """The ok rows of an IMAGES table (failed rows stay on disk, counted, never trained on); with
    folds > 1, every row but those of `fold` (or, keep_fold=True, only those)."""
    ds = usable_images(path, "image shards", ["id", "label", "image"])
    if folds > 1:
        ds = ds.map_batches(fold_rows, batch_format="pyarrow",
                            fn_kwargs={"folds": folds, "fold": fold, "keep": keep_fold})
    return ds


def fold_rows(batch: pa.Table, folds: int, fold: int, keep: bool) -> pa.Table:
    """Rows of one fold (keep) or of all the others."""
    in_fold = filtering.fold_of(batch.column("id").to_pylist(), folds) == fold
    return batch.filter(pa.array(in_fold if keep else ~in_fold))


def training_rows(images: str, folds: int = 0, fold: int = -1) -> tuple[int, int]:
    """(images a run trains on, the bytes they take decoded, H x W x 3): the usable rows outside the
    left-out fold, from one driver-side read of the table's id/height/width columns."""
    t = usable_rows(images, ["id", "height", "width"])
    use = np.ones(t.num_rows, dtype=bool)
    if folds > 1:
        use = filtering.fold_of(t.column("id").to_pylist(), folds) != fold
    pixels = t.column("height").to_numpy(zero_copy_only=False).astype(np.int64) * \
        t.column("width").to_numpy(zero_copy_only=False).astype(np.int64)
    return int(use.sum()), int(3 * pixels[use].sum())


def cache_decoded(mode: str, nbytes: int) -> bool:
    """Keep decoded images in the object store? 'on', 'off', or 'auto' = when they take at most a quarter
    of the cluster's object store (beyond that Ray would spill them to disk, slower than decoding JPEG)."""
    if mode != "auto":
        return mode == "on"
    return nbytes <= ray.cluster_resources().get("object_store_memory", 0) / 4


def classes_of(images: str) -> list[str]:
    """The class list an image table was made with (label i = classes[i-1])."""
    return list(shards.read_marker(images)["classes"])


def check_init(init_from: str, classes: list[str], width: float) -> None:
    """The model a warm start loads must exist and have this run's classes and width (one-line errors)."""
    meta_path = storage.join(init_from, META_FILE)
    if not storage.exists(meta_path) or not storage.exists(storage.join(init_from, MODEL_FILE)):
        raise FileNotFoundError(f"init_from={init_from}: no exported classifier there (model.pt + meta.json)")
    meta = storage.read_json(meta_path)
    if list(meta.get("classes", [])) != list(classes) or float(meta.get("width", -1)) != float(width):
        raise ValueError(f"init_from={init_from}: its classes {meta.get('classes')} / width {meta.get('width')} "
                         f"differ from this run's {classes} / {width}")


def check(cfg: C.ClassifierConfig) -> None:
    """Fail before any training on a missing input, a bad config value or a mismatched warm start."""
    shards.require(cfg.images, "image shards")
    C.validate(cfg)
    classes = classes_of(cfg.images)
    if cfg.init_from:
        check_init(cfg.init_from, classes, cfg.width)


def datasets(cfg: C.ClassifierConfig, ds: ray.data.Dataset) -> dict[str, ray.data.Dataset]:
    """train (augmented), val (the held-out slice) and bn (whole, resized: as inference sees them) batches."""
    def batched(d: ray.data.Dataset, augment: bool, want_holdout: bool) -> ray.data.Dataset:
        if cfg.holdout_fraction > 0:
            d = d.map_batches(holdout_side, batch_format="numpy", batch_size=64,
                              fn_kwargs={"holdout": cfg.holdout_fraction, "want_holdout": want_holdout})
        return d.map_batches(classifier_batch, batch_format="numpy", batch_size=64,
                             fn_kwargs={"input_size": cfg.input_size, "augment": augment})

    out = {"train": batched(ds.randomize_block_order(), True, False)}
    if cfg.holdout_fraction > 0:  # without a held-out slice every val batch would be empty
        out["val"] = batched(ds, False, True)
    if cfg.bn_recalibrate_images > 0:
        out["bn"] = batched(ds.limit(cfg.bn_recalibrate_images), False, False)
    return out


def evaluate(model: torch.nn.Module, shard, batch_size: int, device: torch.device) -> dict:
    """Loss and accuracy of `model` on a dataset shard (summed across ranks)."""
    model.eval()
    loss_sum = torch.zeros(3, dtype=torch.float64, device=device)  # loss, correct, count
    with torch.no_grad():
        for b in worker.batches(shard, batch_size, device, ("x",)):
            logits = model(to_input(b["x"]))
            loss_sum[0] += F.cross_entropy(logits, b["y"], reduction="sum").double()
            loss_sum[1] += (logits.argmax(1) == b["y"]).sum()
            loss_sum[2] += len(b["y"])
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(loss_sum)
    n = max(1.0, loss_sum[2].item())
    model.train()
    return {"val_loss": loss_sum[0].item() / n, "val_acc": loss_sum[1].item() / n, "val_images": int(n)}


def train_loop_per_worker(config: dict) -> None:
    """SGD on the tagged images; reports loss/accuracy/throughput each epoch, checkpoints on rank 0."""
    device = worker.start(config)
    model = build_classifier(config["num_classes"], config["width"])
    if config.get("init_from"):  # before DDP wraps it; a checkpoint resume below overrides these weights
        model.load_state_dict(torch.load(local_model_file(config["init_from"]), map_location="cpu", weights_only=True))
    model = ray.train.torch.prepare_model(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"],
                                weight_decay=config["weight_decay"])
    scheduler = worker.StepDecay(optimizer, config["lr_decay_steps"], config["lr_decay"])
    scaler = worker.make_scaler(device, config["amp"])

    start_epoch, step, history = worker.resume(model, optimizer, scheduler)  # after a worker failure
    resumed_step = step
    num_nodes = worker.count_nodes()
    world_size = ray.train.get_context().get_world_size()
    meta = {"kind": "classifier", "num_classes": config["num_classes"], "width": config["width"],
            "classes": config["classes"], "input_size": config["input_size"]}

    sched = worker.schedule(config)
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val") if config["holdout_fraction"] > 0 else None

    model.train()
    for epoch in range(start_epoch, sched.epochs):
        if sched.done(step):
            break
        meter = worker.Throughput()
        loss_sum, correct, seen = 0.0, 0, 0
        for b in worker.train_batches(train_shard, sched, device, meter):
            with worker.autocast(device, config["amp"]):
                logits = model(to_input(b["x"]))
                loss = F.cross_entropy(logits, b["y"])
            worker.sgd_step(loss, optimizer, scaler, scheduler)
            step += 1
            n = len(b["y"])
            meter.add(n)
            loss_sum += loss.item() * n
            correct += (logits.argmax(1) == b["y"]).sum().item()
            seen += n
            if sched.done(step):
                break
            if worker.step_checkpoint_due(config, step):
                worker.report_step({"epoch": epoch, "step": step, "loss": loss_sum / max(1, seen),
                                    "resumed_step": resumed_step, "mid_epoch": 1}, history, meta, model, optimizer,
                                   scheduler, epoch, step)
        last = sched.is_last(epoch, step)
        metrics = {"epoch": epoch, "step": step, "loss": loss_sum / max(1, seen),
                   "train_acc": correct / max(1, seen), "images_per_sec": meter.rate(),
                   "data_wait_frac": meter.wait_fraction(),
                   "lr": scheduler.get_last_lr()[0], "resumed_step": resumed_step, "mid_epoch": 0,
                   "world_size": world_size, "num_nodes": num_nodes}
        if last and config.get("bn_recalibrate_images", 0) > 0:  # before val: it scores the final statistics
            metrics["bn_recalibrated_images"] = worker.recalibrate(model, sched.per_worker, device,
                                                                   lambda b: to_input(b["x"]))
        if val_shard is not None:
            metrics.update(evaluate(model, val_shard, sched.per_worker, device))
        worker.report_epoch(metrics, history, config, meta, model, optimizer, scheduler, epoch, step, last=last)


def fit(cfg: C.ClassifierConfig, run_name: str, label: str = "") -> dict:
    """Train on cfg.images with Ray Train (checkpoints under `run_name`), export cfg.out/model.pt + meta.json;
    returns the stage meta (classes, images, metrics, every epoch's history). label: its epoch lines' name
    (default: trainer.fit's)."""
    t0 = time.time()
    classes = classes_of(cfg.images)
    n_used, nbytes = training_rows(cfg.images, cfg.folds, cfg.fold)
    if n_used == 0:
        raise ValueError(f"no usable images in {cfg.images}")
    ds = image_dataset(cfg.images, cfg.folds, cfg.fold)
    cached = cache_decoded(cfg.cache_decoded, nbytes)
    if cached:  # every epoch re-runs the pipeline: decode once, and epochs only crop and flip
        log.info("classifier: caching %.0f MiB of decoded images in the object store", nbytes / 2**20)
        ds = ds.map_batches(decode_batch, batch_format="numpy", batch_size=64).materialize()
    config = trainer.loop_config(cfg, num_classes=len(classes), classes=classes,
                                 n_train=int(n_used * (1 - cfg.holdout_fraction)),
                                 init_from=storage.absolute(cfg.init_from) if cfg.init_from else "")
    meta, history = trainer.fit(run_name, train_loop_per_worker, config, datasets(cfg, ds), cfg.compute,
                                cfg.storage_path or cfg.out.rstrip("/") + "_ray_train", cfg.max_failures, cfg.out,
                                cfg.checkpoints_to_keep, label=label)
    return {"classes": classes, "images": int(n_used), "init_from": cfg.init_from,
            "cached_decoded": cached, "seconds": time.time() - t0,
            "metrics": meta["metrics"], "history": history}
