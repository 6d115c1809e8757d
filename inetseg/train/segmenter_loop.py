"""The segmenter's per-worker training loop: pseudo labels, 255 ignored, backbone from the classifier."""
from __future__ import annotations

import ray.train
import ray.train.torch
import torch
import torch.nn.functional as F

from inetseg.models.classifier import build_classifier
from inetseg.models.segmenter import Segmenter
from inetseg.schema import IGNORE
from inetseg.train import session, utils


def build_from_classifier(config: dict) -> Segmenter:
    """A segmenter whose backbone starts from the trained classifier (no outside weights)."""
    classifier = build_classifier(config["num_classes"], config["width"])
    if config.get("classifier_dir"):
        weights = utils.local_model_file(config["classifier_dir"])
        classifier.load_state_dict(torch.load(weights, map_location="cpu"))
    return Segmenter.from_classifier(classifier, config["num_classes"], config["width"],
                                     tuple(config["aspp_rates"]))


def train_loop_per_worker(config: dict) -> None:
    """SGD with a poly schedule and a 10x head learning rate, as DeepLab trains."""
    ctx = ray.train.get_context()
    utils.setup_threads(config["torch_threads"])
    torch.manual_seed(config["seed"] + ctx.get_world_rank())
    device = ray.train.torch.get_device()

    model = build_from_classifier(config)
    groups = [{"params": list(model.backbone_parameters()), "lr": config["lr"]},
              {"params": list(model.head_parameters()), "lr": config["lr"] * config["lr_head_mult"]}]
    model = ray.train.torch.prepare_model(model)
    optimizer = torch.optim.SGD(groups, lr=config["lr"], momentum=config["momentum"],
                                weight_decay=config["weight_decay"])
    steps_per_epoch, drop_last = utils.steps_per_epoch(config["n_train"], config["batch_size"], ctx.get_world_size())
    total_steps = min(config["max_steps"], config["epochs"] * steps_per_epoch)
    scheduler = utils.PolyDecay(optimizer, total_steps)
    scaler = utils.make_scaler(device, config["amp"])

    start_epoch, step = session.resume(model, optimizer, scheduler)  # after a worker failure

    per_worker = max(1, config["batch_size"] // ctx.get_world_size())
    shard = ray.train.get_dataset_shard("train")
    model.train()
    for epoch in range(start_epoch, config["epochs"]):
        if step >= total_steps:
            break
        meter = utils.Throughput()
        loss_sum, seen, labelled, correct = 0.0, 0, 0, 0
        for b in utils.batches(shard, per_worker, device, ("x",), shuffle_buffer=8 * per_worker, meter=meter,
                                 drop_last=drop_last):
            with utils.autocast(device, config["amp"]):
                logits = model(b["x"])  # N x (K+1) x S x S
                loss = F.cross_entropy(logits, b["mask"], ignore_index=IGNORE)
            if not torch.isfinite(loss):  # a batch of only-ignore pixels has no loss to follow
                continue
            session.sgd_step(loss, optimizer, scaler, scheduler)
            step += 1
            valid = b["mask"] != IGNORE
            labelled += int(valid.sum())
            correct += int(((logits.argmax(1) == b["mask"]) & valid).sum())
            meter.add(len(b["x"]))
            loss_sum += loss.item() * len(b["x"])
            seen += len(b["x"])
            if step >= total_steps:
                break
        metrics = {"epoch": epoch, "step": step, "loss": loss_sum / max(1, seen),
                   "pseudo_pixel_acc": correct / max(1, labelled), "images_per_sec": meter.rate(),
                   "data_wait_frac": meter.wait_fraction(),
                   "lr": scheduler.get_last_lr()[0]}
        last = epoch == config["epochs"] - 1 or step >= total_steps
        if last and config.get("bn_recalibrate_images", 0) > 0:
            metrics["bn_recalibrated_images"] = session.recalibrate(model, per_worker, device, lambda b: b["x"])
        meta = {"kind": "segmenter", "num_classes": config["num_classes"], "width": config["width"],
                "aspp_rates": list(config["aspp_rates"]), "classes": config["classes"],
                "input_size": config["input_size"]}
        session.report_epoch(metrics, config, meta, model, optimizer, scheduler, epoch, step, last=last)

