"""Training throughput: Ray Train + Ray Data against a plain PyTorch loop, and 2 workers against 1.

    python jobs/bench/train.py --out train.json [--images 1000] [--epochs 3] [--repeats 3]

Same images (a synthetic corpus, ingested), same GoogLeNet (width, input size), same batch size,
same augmentation functions (random resized crop + flip, in `inetseg/train/data.py`):
- plain: the images decoded once into memory, then a single-process loop that augments each batch
  and steps SGD, torch using every core;
- ray_1: the classifier stage's TorchTrainer, 1 worker using every core, fed by Ray Data (decode and
  augmentation in Ray Data tasks, streaming);
- ray_1x1 and ray_2x1: 1 and 2 workers with one torch thread each (the DDP scaling pair);
- plain_1thread: the plain loop with one torch thread, the counterpart of ray_1x1.
Images per second are the training loop's own (from its first to its last batch of each epoch,
best epoch after the first); wall-clock seconds are reported beside them, from reading the table to the last
step (the plain loop's decoding into memory; Ray Train's start-up and Ray Data's decoding; Ray itself is
started once before anything is timed).
`ratio_vs_plain_torch` = ray_1 / plain per epoch, `ratio_vs_plain_torch_wall` = plain wall / ray_1 wall;
`ratio_vs_plain_torch_1thread` = ray_1x1 / plain_1thread; `speedup_2_workers` = ray_2x1 / ray_1x1 (2 cores
against 1), `speedup_2_workers_vs_1_worker_all_cores` = ray_2x1 / ray_1 (the honest one: both use every core).
Each repeat (`--repeats`, default 3) runs every side once, in the reverse order of the repeat before (a
drifting background load favours neither); ratios are taken within a repeat, and the JSON gives their median,
min and max. Each Ray run also reports `data_wait_frac` per epoch (share of the loop spent waiting for input).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np

from inetseg import config as C
from inetseg import imaging, shards, storage
from jobs.bench.common import machine, ratio_spread, spread, versions


def plain_torch(images: str, cfg: C.ClassifierConfig, threads: int) -> dict:
    """The baseline loop: decoded images in memory, augmentation + SGD in one process."""
    import torch
    import torch.nn.functional as F

    from inetseg.ingest.duplicates import usable_ids
    from inetseg.models.classifier import build_classifier
    from inetseg.train.data import augment_images, to_input

    torch.set_num_threads(threads)
    t_start = time.perf_counter()  # wall time includes decoding the images into memory
    keep = set(usable_ids(images))
    t = shards.read_table(images, columns=["id", "label", "image"])
    rows = [(imaging.decode_rgb(b), int(lab) - 1) for i, lab, b in
            zip(*(t.column(c).to_pylist() for c in ("id", "label", "image"))) if i in keep]
    model = build_classifier(int(max(r[1] for r in rows)) + 1, cfg.width)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(0)
    rates: list[float] = []
    model.train()
    for _ in range(cfg.epochs):
        order = rng.permutation(len(rows))
        t0, n = time.perf_counter(), 0
        for s in range(0, len(order), cfg.batch_size):
            idx = order[s:s + cfg.batch_size]
            x = to_input(torch.from_numpy(augment_images([rows[i][0] for i in idx], cfg.input_size, True, rng)))
            y = torch.tensor([rows[i][1] for i in idx])
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n += len(idx)
        rates.append(n / (time.perf_counter() - t0))
    return {"images_per_second": max(rates[1:] or rates), "epoch_rates": rates,
            "wall_seconds": time.perf_counter() - t_start, "images": len(rows)}


def ray_train(images: str, cfg: C.ClassifierConfig, out: str, workers: int, threads: int) -> dict:
    """The classifier stage itself (Ray Train + Ray Data), from scratch."""
    import ray

    from inetseg.stages import classifier

    c = copy.deepcopy(cfg)
    c.images, c.out = images, out
    # Ray Data's decode/augment tasks need a CPU of their own: on a 2-CPU node two workers reserve
    # half a (logical) CPU each, or the data pipeline never gets scheduled and training stalls.
    cpus = int(ray.cluster_resources().get("CPU", 2))
    c.compute.num_workers, c.compute.torch_threads = workers, threads
    c.compute.cpus_per_worker = min(1.0, (cpus - 1) / workers)
    storage.delete_dir(out)
    storage.delete_dir(out + "_ray_train")
    t0 = time.perf_counter()
    meta = classifier.run(c, resume=False)
    wall = time.perf_counter() - t0
    epochs = [h for h in meta["history"] if not h.get("mid_epoch")]
    # images_per_sec is rank 0's own rate; DDP ranks step in lock-step on equal shards.
    rates = [h["images_per_sec"] * workers for h in epochs]
    return {"images_per_second": max(rates[1:] or rates), "epoch_rates": rates, "wall_seconds": wall,
            "workers": workers, "torch_threads": threads, "cpus_per_worker": c.compute.cpus_per_worker,
            "final_loss": epochs[-1]["loss"], "data_wait_frac": [h.get("data_wait_frac") for h in epochs]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--run", default="runs/bench-train")
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--input-size", type=int, default=128)
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--cache-decoded", default="auto", choices=["auto", "on", "off"],
                    help="classifier.cache_decoded for the Ray runs (off: every epoch decodes the JPEGs again)")
    ap.add_argument("--repeats", type=int, default=3, help="baseline/Ray pairs run back to back (median reported)")
    args = ap.parse_args()

    from inetseg.sources import synth
    from inetseg.stages import ingest
    from inetseg.stages.common import ensure_ray

    ensure_ray(num_cpus=args.cpus)
    corpus = storage.join(args.run, "corpus")
    synth.generate(C.SynthConfig(num_classes=5, images_per_class=args.images // 5, test_images=1, image_size=128),
                   corpus, progress=False)
    images = storage.join(args.run, "images")
    ingest.run(C.IngestConfig(source=storage.join(corpus, "search"), out=images, max_side=128), progress=False)
    cfg = C.ClassifierConfig(width=args.width, input_size=args.input_size, epochs=args.epochs,
                             batch_size=args.batch_size, lr=0.03, lr_decay_steps=10_000, holdout_fraction=0.0,
                             cache_decoded=args.cache_decoded)
    result: dict = {"images": args.images, "epochs": args.epochs, "input_size": args.input_size, "width": args.width,
                    "batch_size": args.batch_size, "cpus": args.cpus, "cache_decoded": args.cache_decoded,
                    "repeats": args.repeats, "versions": versions(), "machine": machine()}
    # The machine is shared and its background load drifts by +-15 % within minutes: every side runs once per
    # repeat, in the reverse order of the repeat before, and ratios are taken within a repeat.
    sides = {"plain": lambda: plain_torch(images, cfg, args.cpus),
             "ray_1": lambda: ray_train(images, cfg, storage.join(args.run, "ray1"), 1, args.cpus),
             "plain_1thread": lambda: plain_torch(images, cfg, 1),
             "ray_1x1": lambda: ray_train(images, cfg, storage.join(args.run, "ray1x1"), 1, 1),
             "ray_2x1": lambda: ray_train(images, cfg, storage.join(args.run, "ray2x1"), 2, 1)}
    reps: list[dict] = []
    for rep in range(args.repeats):
        order = list(sides) if rep % 2 == 0 else list(reversed(sides))
        runs = {}
        for k in order:
            runs[k] = sides[k]()
            print(f"repeat {rep + 1}/{args.repeats}: {k} {runs[k]['images_per_second']:.1f} images/s per epoch, "
                  f"{runs[k]['wall_seconds']:.1f} s wall", flush=True)
        reps.append(runs)
    ips = {k: [r[k]["images_per_second"] for r in reps] for k in sides}
    wall = {k: [r[k]["wall_seconds"] for r in reps] for k in sides}
    result["images_per_second"] = {k: spread(v) for k, v in ips.items()}
    result["wall_seconds"] = {k: spread(v) for k, v in wall.items()}
    result["runs"] = reps
    ratios = {
        "ratio_vs_plain_torch": ratio_spread(ips["ray_1"], ips["plain"]),
        "ratio_vs_plain_torch_wall": ratio_spread(wall["plain"], wall["ray_1"]),
        "ratio_vs_plain_torch_1thread": ratio_spread(ips["ray_1x1"], ips["plain_1thread"]),
        "ratio_vs_plain_torch_1thread_wall": ratio_spread(wall["plain_1thread"], wall["ray_1x1"]),
        "speedup_2_workers": ratio_spread(ips["ray_2x1"], ips["ray_1x1"]),
        "speedup_2_workers_vs_1_worker_all_cores": ratio_spread(ips["ray_2x1"], ips["ray_1"]),
        "speedup_2_workers_vs_1_worker_all_cores_wall": ratio_spread(wall["ray_1"], wall["ray_2x1"]),
    }
    result.update({k: v["median"] for k, v in ratios.items()})
    result["ratios"] = ratios
    storage.write_json(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k.startswith(("ratio_", "speedup"))}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
