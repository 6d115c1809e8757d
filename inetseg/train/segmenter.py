"""The segmenter (DeepLab-style head on the classifier's backbone) on pseudo labels: datasets, loop, fit."""
from __future__ import annotations

import time

import ray
import ray.train
import ray.train.torch
import torch
import torch.nn.functional as F

from inetseg import config as C
from inetseg import shards, storage
from inetseg.models.classifier import build_classifier
from inetseg.models.io import META_FILE, local_model_file
from inetseg.models.segmenter import Segmenter
from inetseg.schema import IGNORE
from inetseg.stages.common import read_stage
from inetseg.train import trainer, worker
from inetseg.train.data import segmenter_batch


def check(cfg: C.SegmenterConfig) -> None:
    """Every input must be a finished stage output (one-line FileNotFoundError)."""
    for table in (cfg.pseudo, *cfg.extra_pseudo):
        shards.require(table, "pseudo-label shards")
    shards.require(cfg.model, "classifier model")
    if cfg.init_from:
        shards.require(cfg.init_from, "segmenter model")


def datasets(cfg: C.SegmenterConfig) -> dict[str, ray.data.Dataset]:
    """train (scale-jittered crops) and bn (pseudo-labelled images whole, resized: as prediction sees them)."""
    ds = read_stage(cfg.pseudo, "pseudo-label shards", columns=["image", "mask"])
    for table in cfg.extra_pseudo:  # fine-tuning: the new pseudo labels and, by option, the initial ones
        ds = ds.union(read_stage(table, "pseudo-label shards", columns=["image", "mask"]))

    def batched(d: ray.data.Dataset, augment: bool) -> ray.data.Dataset:
        return d.map_batches(segmenter_batch, batch_format="numpy", batch_size=32,
                             fn_kwargs={"input_size": cfg.input_size, "augment": augment})

    out = {"train": batched(ds.randomize_block_order(), True)}
    if cfg.bn_recalibrate_images > 0:
        out["bn"] = batched(ds.limit(cfg.bn_recalibrate_images), False)
    return out


def build_from_classifier(config: dict) -> Segmenter:
    """A segmenter whose backbone starts from the trained classifier (no outside weights), or, when fine-tuning
    (init_from), the whole net from a segmenter this run trained."""
    if config.get("init_from"):
        net = Segmenter(config["num_classes"], config["width"], tuple(config["aspp_rates"]))
        net.load_state_dict(torch.load(local_model_file(config["init_from"]), map_location="cpu", weights_only=True))
        return net
    classifier = build_classifier(config["num_classes"], config["width"])
    if config.get("classifier_dir"):
        classifier.load_state_dict(torch.load(local_model_file(config["classifier_dir"]), map_location="cpu",
                                              weights_only=True))
    return Segmenter.from_classifier(classifier, config["num_classes"], config["width"],
                                     tuple(config["aspp_rates"]))


def train_loop_per_worker(config: dict) -> None:
    """SGD with a poly schedule and a 10x head learning rate, as DeepLab trains; 255 pixels are ignored."""
    device = worker.start(config)
    model = build_from_classifier(config)
    groups = [{"params": list(model.backbone_parameters()), "lr": config["lr"]},
              {"params": list(model.head_parameters()), "lr": config["lr"] * config["lr_head_mult"]}]
    model = ray.train.torch.prepare_model(model)
    optimizer = torch.optim.SGD(groups, lr=config["lr"], momentum=config["momentum"],
                                weight_decay=config["weight_decay"])
    sched = worker.schedule(config)
    scheduler = worker.PolyDecay(optimizer, sched.total_steps)
    scaler = worker.make_scaler(device, config["amp"])

    start_epoch, step, history = worker.resume(model, optimizer, scheduler)  # after a worker failure
    meta = {"kind": "segmenter", "num_classes": config["num_classes"], "width": config["width"],
            "aspp_rates": list(config["aspp_rates"]), "classes": config["classes"],
            "input_size": config["input_size"], "training": config["training"]}

    shard = ray.train.get_dataset_shard("train")
    model.train()
    for epoch in range(start_epoch, sched.epochs):
        if sched.done(step):
            break
        meter = worker.Throughput()
        loss_sum, seen, labelled, correct = 0.0, 0, 0, 0
        for b in worker.train_batches(shard, sched, device, meter):
            with worker.autocast(device, config["amp"]):
                logits = model(b["x"])  # N x (K+1) x S x S
                loss = F.cross_entropy(logits, b["mask"], ignore_index=IGNORE)
            if not torch.isfinite(loss):  # a batch of only-ignore pixels has no loss to follow
                continue
            worker.sgd_step(loss, optimizer, scaler, scheduler)
            step += 1
            valid = b["mask"] != IGNORE
            labelled += int(valid.sum())
            correct += int(((logits.argmax(1) == b["mask"]) & valid).sum())
            meter.add(len(b["x"]))
            loss_sum += loss.item() * len(b["x"])
            seen += len(b["x"])
            if sched.done(step):
                break
        metrics = {"epoch": epoch, "step": step, "loss": loss_sum / max(1, seen),
                   "pseudo_pixel_acc": correct / max(1, labelled), "images_per_sec": meter.rate(),
                   "data_wait_frac": meter.wait_fraction(),
                   "lr": scheduler.get_last_lr()[0]}
        last = sched.is_last(epoch, step)
        if last and config.get("bn_recalibrate_images", 0) > 0:
            metrics["bn_recalibrated_images"] = worker.recalibrate(model, sched.per_worker, device, lambda b: b["x"])
        worker.report_epoch(metrics, history, config, meta, model, optimizer, scheduler, epoch, step, last=last)


# Where the data and the weights come from, not how to train: left out of what a model records.
_NOT_TRAINING = ("pseudo", "model", "out", "init_from", "extra_pseudo")


def training_record(cfg: C.SegmenterConfig) -> dict:
    """How this segmenter was trained (input size, epochs, lr, compute, ...), recorded in its meta.json so that
    fine-tuning continues with the same schedule (stages/finetune.py) whoever trained the model."""
    return {k: v for k, v in C.to_dict(cfg, internal_keys=False).items() if k not in _NOT_TRAINING}


def recorded_config(meta: dict) -> C.SegmenterConfig:
    """The SegmenterConfig a model folder's meta.json records (a folder from before it was recorded: the defaults
    at its input size)."""
    if "training" in meta:
        return C.from_dict(C.SegmenterConfig, meta["training"], "training.")
    return C.SegmenterConfig(input_size=int(meta.get("input_size", C.SegmenterConfig.input_size)))


def fit(cfg: C.SegmenterConfig, run_name: str) -> dict:
    """Train on cfg.pseudo from the classifier in cfg.model with Ray Train (checkpoints under `run_name`),
    export cfg.out/model.pt + meta.json; returns the stage meta (images, metrics, every epoch's history)."""
    t0 = time.time()
    cmeta = storage.read_json(storage.join(cfg.model, META_FILE))
    n = sum(shards.count_rows(t) for t in (cfg.pseudo, *cfg.extra_pseudo))
    if n == 0:
        raise ValueError(f"no pseudo-labelled images in {cfg.pseudo}")
    config = trainer.loop_config(cfg, num_classes=cmeta["num_classes"], width=cmeta["width"],
                                 classes=cmeta["classes"], n_train=n, classifier_dir=storage.absolute(cfg.model),
                                 init_from=storage.absolute(cfg.init_from) if cfg.init_from else "",
                                 training=training_record(cfg))
    meta, history = trainer.fit(run_name, train_loop_per_worker, config, datasets(cfg), cfg.compute,
                                cfg.out.rstrip("/") + "_ray_train", cfg.max_failures, cfg.out)
    return {"images": n, "seconds": time.time() - t0, "metrics": meta["metrics"], "history": history}
