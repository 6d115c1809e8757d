"""Ray plumbing shared by the stage modules: starting Ray, reading and writing stage tables."""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import ray

from inetseg import shards, storage
from inetseg.config import ComputeConfig
from inetseg.ingest.duplicates import duplicates_file

log = logging.getLogger("inetseg")


# Worker loggers that speak for Ray, not for the run (a local run's workers only): the cleaner's state-API warning
# (see ensure_ray), Ray Train's and Ray Data's INFO lines in worker processes. Ray Train re-configures logging in its
# training workers after this hook, so there the trainer's LoggingConfig and worker.quiet_ray_lines do it, on any
# cluster.
QUIET_WORKER_LOGGERS = {"ray.train.v2._internal.execution.controller.placement_group_cleaner": logging.ERROR,
                        "ray.train": logging.WARNING, "ray.data": logging.WARNING}


def quiet_worker_logs() -> None:
    """Ray worker_process_setup_hook of a local run: QUIET_WORKER_LOGGERS' levels in every worker process."""
    for name, level in QUIET_WORKER_LOGGERS.items():
        logging.getLogger(name).setLevel(level)


def ensure_ray(address: str = "", num_cpus: int = 0, quiet: bool = False) -> None:
    """Connect to Ray once: an existing cluster (address / RAY_ADDRESS / inside a job) or a local one.
    quiet: for a job that prints its own progress (jobs/ablation.py), no Ray Data progress bars and no worker
    logs forwarded to the driver (a failed task still raises in the driver with its traceback)."""
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"log_to_driver": not quiet, "configure_logging": False}
    # Ship the working tree's package to workers when running from a checkout without install.
    if address:
        ray.init(address=address, **kwargs)
    elif os.environ.get("RAY_ADDRESS"):
        ray.init(**kwargs)
    else:
        # "local" starts a fresh Ray even when a `ray start` cluster runs on this machine. Without a dashboard
        # there is no state API, and Ray Train's placement-group cleaner warns about it every second of every
        # training (561 of a demo run's 1020 console lines): its workers start with that logger quieted.
        ray.init(address="local", num_cpus=num_cpus or None, include_dashboard=False,
                 runtime_env={"worker_process_setup_hook": "inetseg.stages.common.quiet_worker_logs"}, **kwargs)
    ctx = ray.data.DataContext.get_current()
    # Progress bars are for a terminal: written to a file or `ray job logs` they become thousands of lines per
    # dataset (143 MB for a demo run), burying the stage lines. There, as with quiet, the stages' own log lines
    # are the progress, and Ray Data says only what goes wrong.
    terminal = sys.stderr.isatty()
    ctx.enable_progress_bars = terminal and not quiet
    ctx.print_on_execution_start = False
    if quiet or not terminal:
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "Progress bars disabled": yes


def read_stage(path: str, what: str, columns: list[str] | None = None, block_rows: int = 0) -> ray.data.Dataset:
    """A finished stage output as a lazy Ray Dataset (raises FileNotFoundError if missing).

    block_rows > 0: blocks of about that many rows (the read splits the table, no shuffle). A table of small rows
    in one file reads as one block, and a pool maps a block in one task or actor: predict over a 1.5k-image test table
    would use one GPU of eight."""
    shards.require(path, what)
    files = shards.parquet_files(path)
    if not files:
        raise FileNotFoundError(f"{what} at {path} has no Parquet files")
    # The read itself splits the table (block_rows). A repartition operator after it did the same, but its tasks
    # hold their CPUs while their outputs wait downstream, and with the CRF's task pool on every CPU the stage
    # stalled: 160 rows on 2 CPUs took 12 s, 47 s or 256 s from run to run (Ray Data's progress: "5/2 CPU", the
    # writer's blocks queued, no task of its running).
    blocks = max(1, -(-shards.count_rows(path) // block_rows)) if block_rows > 0 else None
    with parquet_reader_v1():
        ds = ray.data.read_parquet(files, file_extensions=["parquet"], override_num_blocks=blocks)
    return ds.select_columns(columns) if columns else ds


@contextlib.contextmanager
def data_context(**settings: Any) -> Iterator[None]:
    """Datasets built inside this block get these DataContext settings (a Dataset copies the context it was made
    under); the global context is restored afterwards.

    op_resource_reservation_enabled=False is for a stage whose one heavy operator should have every CPU: Ray Data
    otherwise reserves a share for each light operator around it (the CRF's tasks ran one at a time on two CPUs;
    the ingest has a single operator and nothing to reserve for)."""
    ctx = ray.data.DataContext.get_current()
    saved = {k: getattr(ctx, k) for k in settings}
    for k, v in settings.items():
        setattr(ctx, k, v)
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(ctx, k, v)


def parquet_reader_v1() -> contextlib.AbstractContextManager[None]:
    """Build datasets inside this block with Ray Data's V1 Parquet reader (each Dataset keeps the context
    it was created under, so the global setting is restored afterwards).

    Why: Ray 2.60's default V2 reader starts a pool of footer-reading actors on every execution, about
    0.85 s of wall time (34 ms CPU) per pass over a table, even for one local file. Training re-executes
    its dataset every epoch, so that start-up is paid per epoch; measured on the 1000-image train bench
    the read went 1.0 s -> 0.12 s per epoch and the first batch arrived 1.1 s -> 0.2 s after the epoch began.
    We list our own files (the table's marker knows them), so V2's distributed listing buys nothing.
    """
    return data_context(use_datasource_v2=False)


def usable_images(path: str, what: str, columns: list[str]) -> ray.data.Dataset:
    """The ok rows of an IMAGES table, minus the ids its ingest set aside as duplicates or ambiguous."""
    from ray.data.expressions import col

    from inetseg import schema

    cols = list(dict.fromkeys([*columns, "status", "id"]))
    ds = read_stage(path, what, columns=cols).filter(expr=col("status") == schema.STATUS_OK)
    dup_file = duplicates_file(path)
    if storage.exists(dup_file):
        dups = shards.read_table_file(dup_file).column("id")
        if len(dups):
            ds = ds.map_batches(filter_ids, batch_format="pyarrow", fn_kwargs={"ids": dups, "keep": False})
    return ds.select_columns(columns) if set(cols) != set(columns) else ds


def filter_ids(batch: pa.Table, ids: pa.Array | pa.ChunkedArray, keep: bool) -> pa.Table:
    """The rows whose id is in `ids` (keep=True) or the rows whose id is not (keep=False).

    Meant for map_batches(filter_ids, fn_kwargs={"ids": ..., "keep": ...}), the id array passed as is: Ray
    Data puts the whole UDF, fn_kwargs included, into the object store once per execution and every task
    reads it from there; an Arrow array pickles its buffers out-of-band, so a task maps them from shared
    memory rather than copying. Memory stays at one copy per node and is released with the execution,
    with no per-process cache to keep alive (Ray warns once such a UDF passes 100 MB, ~4M ids of 20 chars).
    """
    import pyarrow.compute as pc

    hit = pc.is_in(batch.column("id"), value_set=ids)
    return batch.filter(hit if keep else pc.invert(hit))


# What the cast and the write tasks reserve: they take milliseconds per batch, and at a whole CPU each they took
# turns with the stage's own tasks for the node's CPUs (the CRF pool ran at one core's speed on two).
LIGHT_CPUS = 0.1


def write_stage(ds: ray.data.Dataset, path: str, schema: pa.Schema, rows_per_file: int = 2000) -> None:
    """Stream `ds` into `path` as Parquet files of the declared schema (caller marks completion)."""
    ds = ds.map_batches(_conform, fn_kwargs={"schema": schema}, batch_format="pyarrow", num_cpus=LIGHT_CPUS)
    ds.write_parquet(storage.absolute(path), min_rows_per_file=rows_per_file,
                     ray_remote_args={"num_cpus": LIGHT_CPUS})


def _conform(batch: pa.Table, schema: pa.Schema) -> pa.Table:
    """Cast a batch to the declared schema so every shard of a table agrees."""
    missing = [n for n in schema.names if n not in batch.column_names]
    if missing:
        raise ValueError(f"batch lacks columns {missing}")
    return batch.select(schema.names).cast(schema)


def actor_pool(compute: ComputeConfig) -> dict[str, Any]:
    """map_batches kwargs for an inference actor pool sized by the config (GPU when asked)."""
    from ray.data import ActorPoolStrategy

    return {
        "compute": ActorPoolStrategy(size=compute.num_actors),
        "num_gpus": 1 if compute.use_gpu else 0,
        "num_cpus": compute.cpus_per_worker,
        "batch_size": compute.inference_batch_size,
    }


def task_pool(compute: ComputeConfig) -> dict[str, Any]:
    """map_batches kwargs for a stateless function over CPU tasks: at most num_actors tasks at once, each
    reserving cpus_per_worker CPUs and taking inference_batch_size rows (no model to hold: no actors)."""
    from ray.data import TaskPoolStrategy

    return {
        "compute": TaskPoolStrategy(size=compute.num_actors),
        "num_cpus": compute.cpus_per_worker,
        "batch_size": compute.inference_batch_size,
    }


def torch_device(use_gpu: bool):
    """cuda when asked for and present, else cpu."""
    import torch

    return torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")


def set_threads(torch_threads: int) -> None:
    """Intra-op threads for torch in this process, 0 = every core: Ray gives a 1-CPU task, actor or train
    worker one thread, while on a CPU node we want the cores it was sized for (compute.torch_threads)."""
    import torch

    torch.set_num_threads(torch_threads or os.cpu_count() or 1)


def actor_device(compute: ComputeConfig):
    """What every inference actor does first: torch's threads for this process, then its device."""
    set_threads(compute.torch_threads)
    return torch_device(compute.use_gpu)


def stage_fingerprint(cfg: Any, *inputs: str) -> str:
    """Hash of a stage's config and of its finished inputs, so a changed upstream forces a re-run."""
    import hashlib

    from inetseg.config import fingerprint

    parts = [fingerprint(cfg)]
    for path in inputs:
        marker = shards.read_marker(path) if shards.is_complete(path) else {}
        parts.append(f"{marker.get('fingerprint')}@{marker.get('finished_at')}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def declared_fingerprint(name: str, cfg: Any) -> str:
    """stage_fingerprint over the inputs the registry declares for stage `name` (its config and their markers)."""
    from inetseg import registry

    return stage_fingerprint(cfg, *registry.input_paths(name, cfg))


def run_stage(name: str, path: str, fingerprint: str, resume: bool, body: Callable[[], dict],
              keep_partial: bool = False) -> dict:
    """The one resume mechanism: skip a finished stage (same fingerprint) or run `body` and mark `path` complete.

    keep_partial=False: the folder is emptied first (the body writes it whole).
    keep_partial=True: a stage that resumes inside itself (finished shards, finished rounds) keeps what an
    interrupted run left; only a stale completion marker is removed, so a crash mid-body never leaves the
    folder looking finished. With resume=False the folder is emptied either way.
    """
    if resume and shards.is_complete(path, fingerprint):
        log.info("%s: reusing finished output at %s", name, path)
        meta = shards.read_marker(path)
        meta["reused"] = True
        return meta
    if keep_partial and resume:
        storage.makedirs(path)
        marker = storage.join(path, shards.SUCCESS)
        if storage.exists(marker):
            storage.delete_file(marker)
    else:
        shards.prepare(path)
    meta = body()
    return shards.mark_complete(path, fingerprint, meta)
