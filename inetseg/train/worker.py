"""Per-rank helpers of the Ray Train loops: setup, schedule, batches, AMP, SGD step, checkpoints, reports."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import ray.train
import ray.train.torch
import torch
from torch import nn

from inetseg.models.io import META_FILE, MODEL_FILE
from inetseg.stages.common import set_threads
from inetseg.train.batchnorm import average_batchnorm_across_ranks, recalibrate_batchnorm, unwrap

STATE_FILE = "state.pt"
log = logging.getLogger("inetseg")
# What an epoch line shows, when the loop reports it.
EPOCH_LINE_KEYS = ("loss", "train_acc", "pseudo_pixel_acc", "val_loss", "val_acc", "images_per_sec")


def quiet_ray_lines() -> None:
    """Ray's per-epoch INFO lines in a training worker, which the loop's epoch line replaces: Ray Data's
    "Dataset ... execution finished" for every dataset of every epoch, Ray Train's "Reporting training result"
    (its logger is named by file path, so RunConfig's LoggingConfig misses it) and Ray Data's warning that the
    progress bars are off (they are, on purpose: ensure_ray)."""
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # another Ray layout: its lines stay
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def start(config: dict) -> torch.device:
    """How every loop begins: torch's threads, a seed per rank (so ranks augment differently), the device."""
    set_threads(config["torch_threads"])
    quiet_ray_lines()
    torch.manual_seed(config["seed"] + ray.train.get_context().get_world_rank())
    return ray.train.torch.get_device()


@dataclass(frozen=True)
class Schedule:
    """How one rank walks its shard: images per SGD step, whether the short last batch is dropped, the budget."""

    per_worker: int  # this rank's share of the global batch
    drop_last: bool  # see steps_per_epoch
    epochs: int
    total_steps: int  # min(max_steps, epochs x steps per epoch): the lr schedules count towards it

    def done(self, step: int) -> bool:
        return step >= self.total_steps

    def is_last(self, epoch: int, step: int) -> bool:
        """The epoch after which the loop stops (the final weights: recalibrated, always checkpointed)."""
        return epoch == self.epochs - 1 or self.done(step)


def schedule(config: dict) -> Schedule:
    """The Schedule of a loop config (batch_size, n_train, epochs, max_steps) on this run's world size."""
    world = ray.train.get_context().get_world_size()
    per_epoch, drop_last = steps_per_epoch(config["n_train"], config["batch_size"], world)
    return Schedule(max(1, config["batch_size"] // world), drop_last, config["epochs"],
                    min(config["max_steps"], config["epochs"] * per_epoch))


def steps_per_epoch(n_train: int, batch_size: int, world_size: int) -> tuple[int, bool]:
    """(SGD steps in an epoch, whether the short last batch is dropped).

    The last partial batch is dropped when every rank still gets at least one full batch: with BatchNorm
    a batch of 2-3 images gives a noisy step and drags the running statistics the saved model predicts with.
    """
    per_worker = max(1, batch_size // world_size)
    per_rank = n_train // max(1, world_size)
    if per_rank >= per_worker:
        return max(1, per_rank // per_worker), True
    return 1, False


class StepDecay(torch.optim.lr_scheduler.LambdaLR):
    """Caffe 'step' policy (paper): lr * gamma ** (step // step_size), stepped every iteration."""

    def __init__(self, optimizer: torch.optim.Optimizer, step_size: int, gamma: float):
        super().__init__(optimizer, lambda s: gamma ** (s // max(1, step_size)))


class PolyDecay(torch.optim.lr_scheduler.LambdaLR):
    """DeepLab 'poly' policy: lr * (1 - step / total) ** power, stepped every iteration."""

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, power: float = 0.9):
        super().__init__(optimizer, lambda s: max(0.0, 1 - s / max(1, total_steps)) ** power)


def autocast(device: torch.device, enabled: bool):
    """Mixed precision on GPU (bf16 where supported, else fp16); a no-op on CPU."""
    if device.type != "cuda" or not enabled:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def make_scaler(device: torch.device, enabled: bool) -> torch.amp.GradScaler:
    """Loss scaler for fp16 AMP; disabled (pass-through) on CPU or bf16."""
    use = device.type == "cuda" and enabled and not torch.cuda.is_bf16_supported()
    return torch.amp.GradScaler("cuda", enabled=use)


def sgd_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
             scheduler: Any) -> None:
    """One optimiser step (loss scaling for fp16 AMP is a pass-through elsewhere)."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()


class Throughput:
    """Images per second over a window, and the share of it the loop spent waiting for input batches."""

    def __init__(self) -> None:
        self.t0, self.n, self.wait = time.perf_counter(), 0, 0.0

    def add(self, n: int) -> None:
        self.n += n

    def rate(self) -> float:
        dt = time.perf_counter() - self.t0
        return self.n / dt if dt > 0 else 0.0

    def wait_fraction(self) -> float:
        """Share of the window spent blocked on the data pipeline (near 0: compute-bound; high: starved)."""
        dt = time.perf_counter() - self.t0
        return self.wait / dt if dt > 0 else 0.0


def batches(shard: Any, batch_size: int, device: torch.device, keys: tuple[str, ...],
            shuffle_buffer: int = 0, meter: Throughput | None = None, drop_last: bool = False) -> Iterator[dict]:
    """Torch batches from a Ray dataset shard, empty batches skipped (a filter may empty one).

    shuffle_buffer > 0 mixes rows across blocks within a window of that many rows (training);
    with a meter, the time spent waiting for each batch is added to meter.wait; drop_last leaves out
    the short final batch (training: a handful of images makes a noisy step and noisy BatchNorm statistics).
    """
    kwargs = {"local_shuffle_buffer_size": shuffle_buffer} if shuffle_buffer else {}
    it = iter(shard.iter_torch_batches(batch_size=batch_size, device=device, drop_last=drop_last, **kwargs))
    while True:
        t0 = time.perf_counter()
        b = next(it, None)
        if meter is not None:
            meter.wait += time.perf_counter() - t0
        if b is None:
            return
        if len(b[keys[0]]) == 0:
            continue
        yield b


def train_batches(shard: Any, sched: Schedule, device: torch.device, meter: Throughput) -> Iterator[dict]:
    """One epoch's training batches ('x' + targets): rows mixed across blocks over 8 batches' worth."""
    return batches(shard, sched.per_worker, device, ("x",), shuffle_buffer=8 * sched.per_worker, meter=meter,
                   drop_last=sched.drop_last)


def count_nodes() -> int:
    """How many distinct Ray nodes the DDP ranks run on (all-gathered; 1 without a process group)."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return 1
    nodes: list = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(nodes, node)
    return len(set(nodes))


def save_checkpoint_dir(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                        progress: dict, meta: dict) -> str:
    """Write model weights + training state into a fresh temp folder (for ray.train.Checkpoint)."""
    d = tempfile.mkdtemp(prefix="inetseg-ckpt-")
    torch.save(unwrap(model).state_dict(), os.path.join(d, MODEL_FILE))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), **progress},
               os.path.join(d, STATE_FILE))
    with open(os.path.join(d, META_FILE), "w") as f:
        json.dump(meta, f, indent=2)
    return d


def load_checkpoint_dir(d: str, model: nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler: Any) -> dict:
    """Restore weights + state from a checkpoint folder; returns the saved progress dict."""
    unwrap(model).load_state_dict(torch.load(os.path.join(d, MODEL_FILE), map_location="cpu", weights_only=True))
    state = torch.load(os.path.join(d, STATE_FILE), map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state.pop("optimizer"))
    scheduler.load_state_dict(state.pop("scheduler"))
    return state


def resume(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> tuple[int, int, list[dict]]:
    """(first epoch, step, history) to continue from: 0, 0, [] on a fresh run; after a failure or a restart
    of the run, the newest checkpoint's. A mid-epoch checkpoint resumes at the start of that epoch with its
    step count kept, so the step budget (and the lr schedule) is exact either way.

    history is every epoch's metrics so far: the loop owns it and hands it to report_*, which carry it
    inside each checkpoint, because Ray Train keeps the metrics of the kept checkpoints only and a run's
    history must survive restarts too.
    """
    ckpt = ray.train.get_checkpoint()
    if not ckpt:
        return 0, 0, []
    with ckpt.as_directory() as d:
        progress = load_checkpoint_dir(d, model, optimizer, scheduler)
    first = progress["epoch"] + (0 if progress.get("mid_epoch") else 1)
    return first, progress["step"], list(progress.get("history", []))


def step_checkpoint_due(config: dict, step: int) -> bool:
    """True every `checkpoint_every_steps` SGD steps (0 = never inside an epoch)."""
    n = config.get("checkpoint_every_steps", 0)
    return bool(n) and step % n == 0


def _report(metrics: dict, progress: dict, meta: dict, model: nn.Module, optimizer: Any, scheduler: Any,
            save: bool) -> None:
    """Report from every rank (they step in lock-step); rank 0 attaches a checkpoint when `save`."""
    checkpoint = None
    if save and ray.train.get_context().get_world_rank() == 0:
        d = save_checkpoint_dir(model, optimizer, scheduler, progress,
                                {**meta, "metrics": metrics, "history": progress["history"]})
        checkpoint = ray.train.Checkpoint.from_directory(d)
    ray.train.report(metrics, checkpoint=checkpoint)
    if checkpoint is not None and os.path.isdir(checkpoint.path):  # persisted by now: drop the temp copy
        shutil.rmtree(checkpoint.path, ignore_errors=True)


def report_step(metrics: dict, history: list[dict], meta: dict, model: nn.Module, optimizer: Any, scheduler: Any,
                epoch: int, step: int) -> None:
    """A mid-epoch report with a checkpoint (resumed at the start of `epoch`, `step` kept)."""
    progress = {"epoch": epoch, "step": step, "mid_epoch": True, "history": list(history)}
    _report(metrics, progress, meta, model, optimizer, scheduler, save=True)


def report_epoch(metrics: dict, history: list[dict], config: dict, meta: dict, model: nn.Module, optimizer: Any,
                 scheduler: Any, epoch: int, step: int, last: bool) -> None:
    """Append the epoch's metrics to `history` and report them; a checkpoint every checkpoint_every_epochs
    epochs and after the last."""
    history.append(dict(metrics))
    if ray.train.get_context().get_world_rank() == 0:
        log.info("%s: epoch %d/%d  %s", config.get("label", "training"), epoch + 1, config["epochs"],
                 "  ".join(f"{k} {metrics[k]:.4g}" for k in EPOCH_LINE_KEYS if k in metrics))
    due = last or (epoch + 1) % config["checkpoint_every_epochs"] == 0
    _report(metrics, {"epoch": epoch, "step": step, "history": list(history)}, meta, model, optimizer, scheduler,
            save=due)


def recalibrate(model: nn.Module, batch_size: int, device: torch.device,
                net_input: Callable[[dict], torch.Tensor]) -> int:
    """Precise BatchNorm statistics for the final weights from the 'bn' dataset (training images as
    inference sees them: whole, resized, not augmented), averaged over the ranks; returns images used."""
    shard = ray.train.get_dataset_shard("bn")
    seen = recalibrate_batchnorm(model, (net_input(b) for b in batches(shard, batch_size, device, ("x",))))
    average_batchnorm_across_ranks(model)
    total = torch.tensor([seen], dtype=torch.float64, device=device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(total)
    return int(total.item())
