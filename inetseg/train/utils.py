"""Per-worker helpers for the Ray Train loops: device, AMP, checkpoints, learning-rate schedules."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from typing import Any, Iterable, Iterator

import torch
from torch import nn

MODEL_FILE = "model.pt"
STATE_FILE = "state.pt"
META_FILE = "meta.json"


def setup_threads(torch_threads: int) -> None:
    """Ray gives a 1-CPU worker one intra-op thread; on a CPU node we want the cores we were sized for."""
    torch.set_num_threads(torch_threads or os.cpu_count() or 1)


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


def unwrap(model: nn.Module) -> nn.Module:
    """The bare module behind DDP."""
    return model.module if hasattr(model, "module") else model


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
    unwrap(model).load_state_dict(torch.load(os.path.join(d, MODEL_FILE), map_location="cpu"))
    state = torch.load(os.path.join(d, STATE_FILE), map_location="cpu", weights_only=False)
    optimizer.load_state_dict(state.pop("optimizer"))
    scheduler.load_state_dict(state.pop("scheduler"))
    return state


def local_model_file(model_dir: str) -> str:
    """A path on this node to `model_dir`/model.pt, downloaded first when the folder is a cloud URI."""
    from inetseg import storage

    path = storage.join(model_dir, MODEL_FILE)
    if not storage.is_uri(path):
        return path
    local = os.path.join(tempfile.mkdtemp(prefix="inetseg-model-"), MODEL_FILE)
    with open(local, "wb") as f:
        f.write(storage.read_bytes(path))
    return local


class StepDecay(torch.optim.lr_scheduler.LambdaLR):
    """Caffe 'step' policy (paper): lr * gamma ** (step // step_size), stepped every iteration."""

    def __init__(self, optimizer: torch.optim.Optimizer, step_size: int, gamma: float):
        super().__init__(optimizer, lambda s: gamma ** (s // max(1, step_size)))


class PolyDecay(torch.optim.lr_scheduler.LambdaLR):
    """DeepLab 'poly' policy: lr * (1 - step / total) ** power, stepped every iteration."""

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, power: float = 0.9):
        super().__init__(optimizer, lambda s: max(0.0, 1 - s / max(1, total_steps)) ** power)


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


def count_nodes() -> int:
    """How many distinct Ray nodes the DDP ranks run on (all-gathered; 1 without a process group)."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return 1
    nodes: list = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(nodes, node)
    return len(set(nodes))


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


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer of `model` (DDP wrapper or not)."""
    return [m for m in unwrap(model).modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def recalibrate_batchnorm(model: nn.Module, inputs: Iterable[torch.Tensor]) -> int:
    """Precise BatchNorm: replace the running statistics with plain averages over `inputs` (batches of
    network input) at the model's current weights; returns the number of images seen (0: left unchanged).

    Why: the running averages mix statistics of many past weights (momentum 0.1), of augmented crops and,
    under DDP, of one rank's shard only. Eval-mode predictions (filter scores, attention maps) use them,
    and after short or fast training they can be far off: once a 2-rank run whose training loss fell
    1.09 -> 0.53 scored 1.21 in eval mode, worse than its initialisation. Runs the bare module, so no DDP
    buffer broadcast interferes; call `average_batchnorm_across_ranks` afterwards under DDP.
    """
    bns = batchnorm_layers(model)
    if not bns:
        return 0
    net = unwrap(model)
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone(), m.momentum)
             for m in bns]
    was_training = net.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: every batch counts the same
    net.train()
    seen = 0
    with torch.no_grad():
        for x in inputs:
            if len(x) < 2:  # one image has no batch variance to contribute
                continue
            net(x)
            seen += len(x)
    for m, (mean, var, count, momentum) in zip(bns, saved):
        m.momentum = momentum
        if not seen:  # nothing went through: keep what training left
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(count)
    net.train(was_training)
    return seen


def average_batchnorm_across_ranks(model: nn.Module) -> None:
    """Mean of every BatchNorm running statistic over the DDP ranks (a no-op without a process group)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    world = torch.distributed.get_world_size()
    for m in batchnorm_layers(model):
        for buf in (m.running_mean, m.running_var):
            torch.distributed.all_reduce(buf)
            buf.div_(world)
