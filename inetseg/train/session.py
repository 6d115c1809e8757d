"""What both training loops do with Ray Train: resume from a checkpoint, report and checkpoint an epoch."""
from __future__ import annotations

import os
import shutil
from typing import Any, Callable

import ray.train
import torch

from inetseg.train import utils


def resume(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> tuple[int, int]:
    """(first epoch, step) to continue from: 0, 0 on a fresh run; after a failure or a restart of the
    run, the newest checkpoint's. A mid-epoch checkpoint resumes at the start of that epoch with its
    step count kept, so the step budget (and the lr schedule) is exact either way."""
    ckpt = ray.train.get_checkpoint()
    _HISTORY.clear()
    if not ckpt:
        return 0, 0
    with ckpt.as_directory() as d:
        progress = utils.load_checkpoint_dir(d, model, optimizer, scheduler)
    _HISTORY.extend(progress.get("history", []))
    return progress["epoch"] + (0 if progress.get("mid_epoch") else 1), progress["step"]


# Every epoch's metrics so far, carried inside each checkpoint: Ray Train keeps the metrics of the
# kept checkpoints only, and a run's history must survive restarts too.
_HISTORY: list[dict] = []


def sgd_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
             scheduler: Any) -> None:
    """One optimiser step (loss scaling for fp16 AMP is a pass-through elsewhere)."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()


def step_checkpoint_due(config: dict, step: int) -> bool:
    """True every `checkpoint_every_steps` SGD steps (0 = never inside an epoch)."""
    n = config.get("checkpoint_every_steps", 0)
    return bool(n) and step % n == 0


def report_step(metrics: dict, meta: dict, model: torch.nn.Module, optimizer: Any, scheduler: Any,
                epoch: int, step: int) -> None:
    """A mid-epoch report from every rank (they step in lock-step); rank 0 attaches a checkpoint."""
    checkpoint = None
    if ray.train.get_context().get_world_rank() == 0:
        d = utils.save_checkpoint_dir(model, optimizer, scheduler,
                                      {"epoch": epoch, "step": step, "mid_epoch": True, "history": list(_HISTORY)},
                                      {**meta, "metrics": metrics, "history": list(_HISTORY)})
        checkpoint = ray.train.Checkpoint.from_directory(d)
    ray.train.report(metrics, checkpoint=checkpoint)
    if checkpoint is not None and os.path.isdir(checkpoint.path):
        shutil.rmtree(checkpoint.path, ignore_errors=True)


def report_epoch(metrics: dict, config: dict, meta: dict, model: torch.nn.Module, optimizer: Any,
                 scheduler: Any, epoch: int, step: int, last: bool) -> None:
    """Report the epoch's metrics from every rank; rank 0 attaches a checkpoint when one is due."""
    checkpoint = None
    _HISTORY.append(dict(metrics))
    due = last or (epoch + 1) % config["checkpoint_every_epochs"] == 0
    if ray.train.get_context().get_world_rank() == 0 and due:
        d = utils.save_checkpoint_dir(model, optimizer, scheduler,
                                      {"epoch": epoch, "step": step, "history": list(_HISTORY)},
                                      {**meta, "metrics": metrics, "history": list(_HISTORY)})
        checkpoint = ray.train.Checkpoint.from_directory(d)
    ray.train.report(metrics, checkpoint=checkpoint)
    if checkpoint is not None and os.path.isdir(checkpoint.path):  # persisted by now: drop the temp copy
        shutil.rmtree(checkpoint.path, ignore_errors=True)


def recalibrate(model: torch.nn.Module, batch_size: int, device: torch.device,
                net_input: Callable[[dict], torch.Tensor]) -> int:
    """Precise BatchNorm statistics for the final weights from the 'bn' dataset (training images as
    inference sees them: whole, resized, not augmented), averaged over the ranks; returns images used."""
    shard = ray.train.get_dataset_shard("bn")
    seen = utils.recalibrate_batchnorm(model, (net_input(b) for b in utils.batches(shard, batch_size, device, ("x",))))
    utils.average_batchnorm_across_ranks(model)
    total = torch.tensor([seen], dtype=torch.float64, device=device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(total)
    return int(total.item())
