"""The classifier's per-worker training loop (what Ray Train runs on every DDP rank)."""
from __future__ import annotations

import ray.train
import ray.train.torch
import torch
import torch.nn.functional as F

from inetseg.models.classifier import build_classifier
from inetseg.train import session, utils
from inetseg.train.data import to_input


def evaluate(model: torch.nn.Module, shard, batch_size: int, device: torch.device) -> dict:
    """Loss and accuracy of `model` on a dataset shard (summed across ranks)."""
    model.eval()
    loss_sum = torch.zeros(3, dtype=torch.float64, device=device)  # loss, correct, count
    with torch.no_grad():
        for b in utils.batches(shard, batch_size, device, ("x",)):
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
    ctx = ray.train.get_context()
    utils.setup_threads(config["torch_threads"])
    torch.manual_seed(config["seed"] + ctx.get_world_rank())
    device = ray.train.torch.get_device()

    model = build_classifier(config["num_classes"], config["width"])
    if config.get("init_from"):  # before DDP wraps it; a checkpoint resume below overrides these weights
        model.load_state_dict(torch.load(utils.local_model_file(config["init_from"]), map_location="cpu"))
    model = ray.train.torch.prepare_model(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"],
                                weight_decay=config["weight_decay"])
    scheduler = utils.StepDecay(optimizer, config["lr_decay_steps"], config["lr_decay"])
    scaler = utils.make_scaler(device, config["amp"])

    start_epoch, step = session.resume(model, optimizer, scheduler)  # after a worker failure
    resumed_step = step
    num_nodes = utils.count_nodes()
    meta = {"kind": "classifier", "num_classes": config["num_classes"], "width": config["width"],
            "classes": config["classes"], "input_size": config["input_size"]}

    per_worker = max(1, config["batch_size"] // ctx.get_world_size())
    steps_per_epoch, drop_last = utils.steps_per_epoch(config["n_train"], config["batch_size"], ctx.get_world_size())
    total_steps = min(config["max_steps"], config["epochs"] * steps_per_epoch)
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val") if config["holdout_fraction"] > 0 else None

    model.train()
    for epoch in range(start_epoch, config["epochs"]):
        if step >= total_steps:
            break
        meter = utils.Throughput()
        loss_sum, correct, seen = 0.0, 0, 0
        for b in utils.batches(train_shard, per_worker, device, ("x",), shuffle_buffer=8 * per_worker, meter=meter,
                                 drop_last=drop_last):
            with utils.autocast(device, config["amp"]):
                logits = model(to_input(b["x"]))
                loss = F.cross_entropy(logits, b["y"])
            session.sgd_step(loss, optimizer, scaler, scheduler)
            step += 1
            n = len(b["y"])
            meter.add(n)
            loss_sum += loss.item() * n
            correct += (logits.argmax(1) == b["y"]).sum().item()
            seen += n
            if step >= total_steps:
                break
            if session.step_checkpoint_due(config, step):
                session.report_step({"epoch": epoch, "step": step, "loss": loss_sum / max(1, seen),
                                     "resumed_step": resumed_step, "mid_epoch": 1}, meta, model, optimizer,
                                    scheduler, epoch, step)
        last = epoch == config["epochs"] - 1 or step >= total_steps
        metrics = {"epoch": epoch, "step": step, "loss": loss_sum / max(1, seen),
                   "train_acc": correct / max(1, seen), "images_per_sec": meter.rate(),
                   "data_wait_frac": meter.wait_fraction(),
                   "lr": scheduler.get_last_lr()[0], "resumed_step": resumed_step, "mid_epoch": 0,
                   "world_size": ctx.get_world_size(), "num_nodes": num_nodes}
        if last and config.get("bn_recalibrate_images", 0) > 0:
            metrics["bn_recalibrated_images"] = session.recalibrate(model, per_worker, device,
                                                                    lambda b: to_input(b["x"]))
        if val_shard is not None:
            metrics.update(evaluate(model, val_shard, per_worker, device))
        session.report_epoch(metrics, config, meta, model, optimizer, scheduler, epoch, step, last=last)

