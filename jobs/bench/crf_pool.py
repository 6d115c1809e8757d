"""The CRF stage's Ray Data pool against a bare single-process pydensecrf loop, over real photos.

    python jobs/bench/crf.py --source ../shared/data/camvid-train --out F.json [--images 120] [--repeats 3]

The photos (CamVid: 480 x 360, 11 labels) get coarse, noisy probabilities made from their masks (crf.coarse_probs,
as in the quality bench) and go into a PREDICTIONS table with float16 probs, exactly what the crf stage reads
after predict (files of predict.ROWS_PER_FILE rows). Then, interleaved and alternating which goes first, each
--repeats times:

  bare   one process: read the table with pyarrow, refine every row (decode photo and probs, pydensecrf, encode
         the PNG: inetseg.crf.refine_png, the function the stage maps) in a plain loop, write one Parquet file
  pool   the same with the rows mapped over a multiprocessing.Pool of --workers processes (started before the
         clock): the same parallelism without Ray (ratio_vs_pool is Ray's own cost, pool_speedup_vs_bare how far
         the cores scale for this memory-heavy work at all)
  stage  inetseg.stages.crf.run: Ray Data tasks, --workers at once (default: every core), writing the stage's
         table with its completion marker

Ray is started before either is timed (start-up on neither side). ratio_vs_bare_per_core =
(stage images/s / bare images/s) / workers; goal >= 0.9 (Ray's overhead and the split into tasks cost under 10 %).
"""
from __future__ import annotations

import functools
import hashlib
import logging
import multiprocessing
import os
import shutil
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from inetseg import config as C
from inetseg import imaging, masks, schema, shards, storage
from inetseg.crf import refine_png
from inetseg.stages import predict
from jobs.bench.common import machine, ratio_spread, spread, versions

log = logging.getLogger("inetseg")


def build_table(root: str, n: int, classes: int, void: int, coarse, out: str) -> int:
    """A PREDICTIONS table of the first n photos (by name hash) under root/images, root/masks; returns rows."""
    names = sorted(os.listdir(os.path.join(root, "images")),
                   key=lambda s: hashlib.sha1(s.encode()).hexdigest())[:n or None]
    rows: dict[str, list] = {k: [] for k in schema.PREDICTIONS.names}
    for name in names:
        data = open(os.path.join(root, "images", name), "rb").read()
        mask = masks.decode_mask(open(os.path.join(root, "masks", name), "rb").read(), name)
        rng = np.random.default_rng(int(hashlib.sha1(name.encode()).hexdigest()[:8], 16))
        probs = coarse(mask, classes, rng)
        gt = np.where(mask == void, schema.IGNORE, mask).astype(np.uint8)
        for k, v in (("id", name), ("image", data), ("gt", imaging.encode_png(gt)),
                     ("pred", imaging.encode_png(probs.argmax(0).astype(np.uint8))),
                     ("probs", schema.encode_probs(probs.astype(np.float16))),
                     ("height", mask.shape[0]), ("width", mask.shape[1])):
            rows[k].append(v)
    shards.prepare(out)
    table = pa.Table.from_pydict(rows, schema=schema.PREDICTIONS)
    for i in range(0, len(names), predict.ROWS_PER_FILE):  # files as the predict stage writes them
        shards.write_table(table.slice(i, predict.ROWS_PER_FILE), out, f"part-{i // predict.ROWS_PER_FILE:05d}.parquet")
    shards.mark_complete(out, "bench", {"images": len(names), "classes": [str(i) for i in range(1, classes)]})
    return len(names)


def _refine_pair(cfg: C.CRFConfig, pair: tuple[bytes, bytes]) -> bytes:
    return refine_png(pair[0], pair[1], cfg)


def bare(table: str, cfg: C.CRFConfig, out: str, pool=None) -> int:
    """The baseline without Ray: the same rows through the same function in one process (or a process pool's
    map, one process per core, started before the clock), one Parquet file out."""
    t = pa.concat_tables([pq.read_table(f) for f in shards.parquet_files(table)])
    cols = t.to_pydict()
    pairs = list(zip(cols["image"], cols["probs"]))
    preds = (pool.map(functools.partial(_refine_pair, cfg), pairs, chunksize=1) if pool is not None
             else [_refine_pair(cfg, p) for p in pairs])
    cols.update(pred=preds, probs=[None] * len(preds))
    os.makedirs(out, exist_ok=True)
    pq.write_table(pa.Table.from_pydict(cols, schema=schema.PREDICTIONS), os.path.join(out, "part-0.parquet"))
    return len(preds)


def labellings(folder: str) -> dict[str, bytes]:
    """id -> CRF labelling PNG of a side's output (both sides must write the same ones)."""
    t = pa.concat_tables([pq.read_table(f, columns=["id", "pred"]) for f in shards.parquet_files(folder)])
    return dict(zip(t.column("id").to_pylist(), t.column("pred").to_pylist()))


def run(args, coarse, classes: int, void: int) -> dict:
    """Build the table, time both sides; the JSON's content."""
    import ray

    from inetseg.stages import crf as stage
    from inetseg.stages.common import ensure_ray

    workers = args.workers or os.cpu_count() or 1
    work = tempfile.mkdtemp(prefix="crf-pool-")
    try:
        table = os.path.join(work, "predictions")
        n = build_table(args.source, args.images, classes, void, coarse, table)
        log.info("crf pool: %d photos of %s in a PREDICTIONS table; %d workers", n, args.source, workers)
        cfg = C.CRFConfig(predictions=table, compute=C.ComputeConfig(num_actors=workers, cpus_per_worker=1,
                                                                     inference_batch_size=args.batch))
        ensure_ray(num_cpus=workers, quiet=True)
        pool = multiprocessing.get_context("spawn").Pool(workers)  # Ray's threads live here: no fork
        pool.map(abs, range(workers))  # started before the clock, as Ray is
        sides = {"bare": lambda o: bare(table, cfg, o),
                 "pool": lambda o: bare(table, cfg, o, pool),
                 "stage": lambda o: stage.run(C.CRFConfig(**{**vars(cfg), "out": o}), resume=False)}
        per_s: dict[str, list[float]] = {k: [] for k in sides}
        same = True
        for r in range(args.repeats):
            for k in (list(sides) if r % 2 == 0 else list(reversed(sides))):
                t0 = time.perf_counter()
                sides[k](os.path.join(work, f"{k}-{r}"))
                per_s[k].append(n / (time.perf_counter() - t0))
            got = [labellings(os.path.join(work, f"{k}-{r}")) for k in sides]
            same = same and all(g == got[0] for g in got)
            for k in sides:
                shutil.rmtree(os.path.join(work, f"{k}-{r}"), ignore_errors=True)
            log.info("crf pool: repeat %d/%d: bare %.2f, pool %.2f, stage %.2f images/s", r + 1, args.repeats,
                     per_s["bare"][-1], per_s["pool"][-1], per_s["stage"][-1])
        ray.shutdown()
        pool.terminate()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ratio = ratio_spread(per_s["stage"], per_s["bare"])
    per_core = spread([v / workers for v in ratio["values"]])
    return {"ratio_vs_bare_per_core": per_core["median"], "same_output": same,
            "ratio_vs_bare_per_core_spread": per_core,
            "ratio_vs_bare": ratio, "goal": "ratio_vs_bare_per_core >= 0.9", "goal_met": per_core["median"] >= 0.9,
            # Ray's own cost against the same parallelism without Ray, and how far the cores scale at all
            "ratio_vs_pool": ratio_spread(per_s["stage"], per_s["pool"]),
            "pool_speedup_vs_bare": ratio_spread(per_s["pool"], per_s["bare"]),
            "images_per_s": {k: spread(v) for k, v in per_s.items()},
            "settings": {"source": os.path.abspath(args.source), "images": n, "workers": workers,
                         "batch": args.batch, "repeats": args.repeats, "crf": C.to_dict(C.CRFParams()),
                         "unaries": "crf.coarse_probs of each photo's mask, stored float16"},
            "versions": versions(), "machine": machine()}


def main(args, coarse, classes: int, void: int) -> int:
    result = run(args, coarse, classes, void)
    storage.write_json(args.out, result)
    ips = result["images_per_s"]
    print(f"crf: stage {ips['stage']['median']:.2f} images/s with {result['settings']['workers']} workers, bare loop "
          f"{ips['bare']['median']:.2f} images/s -> {result['ratio_vs_bare_per_core']:.2f} per core (goal >= 0.9)")
    return 0
