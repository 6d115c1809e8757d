"""Ingest stage: a folder-per-tag tree or URL manifest -> validated, de-duplicated JPEG image shards (Ray Data)."""
from __future__ import annotations

import hashlib
import logging
import time

import ray

from inetseg import config as C
from inetseg import download, imaging, storage
from inetseg.ingest.duplicates import find_duplicates, write_duplicates
from inetseg.ingest.listing import list_source
from inetseg.ingest.plan import open_folder, plan_shards, remove_stale, shard_done
from inetseg.ingest.stats import stats_table, totals
from inetseg.ingest.worker import ingest_shard
from inetseg.progress import bar as progress_bar
from inetseg.stages.common import data_context, run_stage

log = logging.getLogger("inetseg")


def _run_shards(cfg: C.IngestConfig, pending: list[dict], total_rows: int, progress: bool) -> None:
    """Ingest the pending shards, one Ray Data task each, behind one image-level progress bar."""
    limits = imaging.ImageLimits(cfg.max_side, cfg.min_side, cfg.max_aspect, cfg.max_pixels)
    policy = download.FetchPolicy(timeout=cfg.timeout_seconds, max_bytes=cfg.max_bytes,
                                  retries=cfg.download_retries, threads=cfg.download_threads,
                                  per_host=cfg.per_host_concurrency, allow_private_hosts=cfg.allow_private_hosts)
    done_rows = total_rows - sum(s["rows"] for s in pending)
    # One image-level bar instead of Ray Data's per-operator ones; and this dataset has a single operator, so
    # there is nothing downstream to reserve resources for: the reservation would only hold CPUs back.
    with data_context(enable_progress_bars=False, op_resource_reservation_enabled=False):
        ds = ray.data.from_items(pending, override_num_blocks=len(pending))
        ds = ds.map(ingest_shard, num_cpus=1, fn_kwargs={"out": storage.absolute(cfg.out), "limits": limits,
                                                         "quality": cfg.jpeg_quality, "policy": policy,
                                                         "batch": cfg.files_per_task})
        with progress_bar(total_rows, "ingest", "img", initial=done_rows, enabled=progress) as bar:
            for row in ds.iter_rows():
                bar.update(int(row["total"]))


def run(cfg: C.IngestConfig, resume: bool = True, progress: bool = True) -> dict:
    """Ingest cfg.source into cfg.out shard by shard (a re-run skips finished shards); returns the stage marker."""
    t0 = time.time()
    listing, classes = list_source(cfg.source, list(cfg.classes))
    specs, total_rows = plan_shards(listing, cfg.rows_per_shard), listing.num_rows
    del listing  # the specs hold the rows (packed); nothing per input stays on the driver
    config_fp = C.fingerprint(cfg)
    # The inputs are part of the fingerprint: a source that gained or lost files is not "finished".
    fp = hashlib.sha256((config_fp + "".join(s["digest"] for s in specs)).encode()).hexdigest()[:16]

    def body() -> dict:
        open_folder(cfg.out, config_fp)  # finished shards survive only a re-run of the same config
        pending = [s for s in specs if not shard_done(cfg.out, s)]
        if len(pending) < len(specs):
            log.info("ingest: %d of %d shards already finished, %d to go", len(specs) - len(pending), len(specs),
                     len(pending))
        storage.makedirs(storage.join(cfg.out, "_shards"))
        if pending:
            _run_shards(cfg, pending, total_rows, progress)
        remove_stale(cfg.out, specs)
        dups = find_duplicates(cfg.out, [s["name"] for s in specs if s["rows"]], cfg)
        write_duplicates(cfg.out, dups)
        stats = totals(cfg.out, specs, dups)
        storage.write_json(storage.join(cfg.out, "stats.json"), {k: stats[k] for k in ("total", "ok", "failed")})
        return {"classes": classes, "seconds": time.time() - t0, "resumed_shards": len(specs) - len(pending),
                **stats}

    meta = run_stage("ingest", cfg.out, fp, resume, body, keep_partial=True)
    log.info(stats_table(meta))
    return meta
