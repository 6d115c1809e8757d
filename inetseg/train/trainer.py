"""Driver side of Ray Train: build a TorchTrainer from a stage config, fit, export the final model."""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import ray
from ray.train import CheckpointConfig, DataConfig, FailureConfig, LoggingConfig, RunConfig
from ray.train.torch import TorchConfig, TorchTrainer

from inetseg import config as C
from inetseg import storage
from inetseg.models.io import META_FILE, MODEL_FILE

log = logging.getLogger("inetseg")


def backend(compute: C.ComputeConfig) -> str:
    """nccl for GPU workers, gloo for CPU ones, unless the config names one."""
    if compute.backend != "auto":
        return compute.backend
    return "nccl" if compute.use_gpu else "gloo"


def loop_config(cfg: Any, **extra: Any) -> dict:
    """What the per-worker loop reads: the stage config's fields (compute's two per-worker knobs flattened
    in, the rest of compute is the driver's) plus `extra`."""
    d = {k: v for k, v in C.to_dict(cfg).items() if k != "compute"}
    return {**d, **extra, "torch_threads": cfg.compute.torch_threads, "amp": cfg.compute.amp}


def make_trainer(name: str, loop: Callable[[dict], None], config: dict, datasets: dict[str, ray.data.Dataset],
                 compute: C.ComputeConfig, storage_path: str, max_failures: int, keep: int = 2) -> TorchTrainer:
    """`loop` on compute.num_workers DDP workers.

    Checkpoints go to `storage_path/name`; a re-run with the same path resumes from the newest one,
    and up to `max_failures` worker deaths are survived by restarting from it.
    """
    cpus = ray.cluster_resources().get("CPU", 0)
    if compute.num_workers * compute.cpus_per_worker >= cpus:
        # Ray Data decodes and augments in tasks of their own; with every CPU reserved by the workers
        # they are never scheduled and training waits forever (seen on a 2-CPU node with 2 x 1 CPU).
        log.warning("%s: %d workers x %.2g CPUs reserve all %d CPUs of the cluster; Ray Data needs some for "
                    "decoding: lower compute.cpus_per_worker or add nodes", name, compute.num_workers,
                    compute.cpus_per_worker, int(cpus))
    return TorchTrainer(
        train_loop_per_worker=loop,
        train_loop_config=config,
        torch_config=TorchConfig(backend=backend(compute)),
        scaling_config=ray.train.ScalingConfig(
            num_workers=compute.num_workers, use_gpu=compute.use_gpu, placement_strategy=compute.placement_strategy,
            resources_per_worker={"CPU": compute.cpus_per_worker, **({"GPU": 1} if compute.use_gpu else {})}),
        run_config=RunConfig(
            name=name,
            storage_path=storage.absolute(storage_path),
            checkpoint_config=CheckpointConfig(num_to_keep=keep),
            failure_config=FailureConfig(max_failures=max_failures),
            # Ray Train's own INFO lines (resources requested, worker group started, process group set up, every
            # report and checkpoint: ~5 per epoch) are for debugging Ray; the console's progress is the loop's
            # one line per epoch (worker.report_epoch). Its warnings and errors still show.
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
        datasets=datasets,
        # One worker reads the whole dataset: handing it over unsplit skips the SplitCoordinator actor,
        # a process of its own that relays every block (on the 2-core train bench it cost ~10 % of the
        # loop's speed through CPU contention with torch's threads).
        dataset_config=DataConfig(datasets_to_split="all" if compute.num_workers > 1 else []),
    )


def fit(name: str, loop: Callable[[dict], None], config: dict, datasets: dict[str, ray.data.Dataset],
        compute: C.ComputeConfig, storage_path: str, max_failures: int, out: str,
        keep: int = 2, label: str = "") -> tuple[dict, list[dict]]:
    """Train (see make_trainer) and export the final model into `out`; returns (its meta, every epoch's metrics).
    label names the training in its epoch lines (default: `name` without its fingerprint)."""
    config = {**config, "label": label or name.rsplit("-", 1)[0]}
    result = make_trainer(name, loop, config, datasets, compute, storage_path, max_failures, keep).fit()
    if result.error:
        raise RuntimeError(f"{name} training failed: {result.error}")
    meta = export_model(result, out)
    return meta, history(result, meta)


def export_model(result: Any, out: str) -> dict:
    """Copy the final checkpoint's weights and meta to `out` (model.pt, meta.json); returns the meta."""
    if result.checkpoint is None:
        raise RuntimeError("training finished without a checkpoint")
    with result.checkpoint.as_directory() as d:
        for fname in (MODEL_FILE, META_FILE):
            storage.write_bytes(storage.join(out, fname), open(os.path.join(d, fname), "rb").read())
        meta = storage.read_json(storage.join(out, META_FILE))
    return meta


def history(result: Any, meta: dict) -> list[dict]:
    """Every epoch's metrics: carried in the final checkpoint (Ray Train keeps only the kept checkpoints')."""
    if meta.get("history"):
        return list(meta["history"])
    df = result.metrics_dataframe
    return df.to_dict(orient="records") if df is not None else []
