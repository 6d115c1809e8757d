"""Scale on one machine: 100k images generated, ingested and (a sample) turned into pseudo labels, streaming.

    python jobs/bench/scale.py --images 100000 --out F.json [--size 64] [--attention-sample 2000]

1. generate: --images synthetic search images (--size px, 5 tags) rendered in parallel by Ray tasks of
   --chunk images each, written as JPEG files in a folder per tag (images/s).
2. ingest at N/4 and N: `inetseg ingest` as a fresh subprocess each (its own Ray), the links to the first N/4
   files and then all N. Sampled every --sample-seconds over the whole process tree: peak RSS and PSS, the
   driver's own peak RSS (the CLI process: it must hold no per-image object), the bytes in Ray's object spill
   folder (RAY_object_spilling_config points it at a folder this script watches); its images/s end to end;
   and console_bytes, what it printed to stdout and stderr (a person must be able to read a 100k run's console:
   aim under 1 MB).
3. attention on a sample: the attention stage (Ray Data actor pool, the demo's net at its sizes, random
   weights: speed does not depend on them) over --attention-sample of the ingested images, in a subprocess.

Keys: rss_ratio_100k_vs_25k (goal <= 1.25), throughput_ratio_100k_vs_25k (goal >= 0.9), driver_rss_ratio,
console_bytes (of the N run), spill_bytes, images_per_s per stage.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from inetseg import config as C
from inetseg import storage
from jobs.bench.common import machine, tree_memory, versions

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TAGS = 5


def render_chunk(size: int, out: str, start: int, stop: int) -> int:
    """Ray task body: search images start..stop-1 (round-robin over the tags) as JPEG files."""
    import cv2

    from inetseg.sources import synth

    cfg = C.SynthConfig(num_classes=TAGS, images_per_class=1, test_images=1, image_size=size)
    names = synth.class_names(TAGS)
    for i in range(start, stop):
        ci = i % TAGS + 1
        rgb, *_ = synth.render_search_image(cfg, ci, i // TAGS)
        cv2.imwrite(os.path.join(out, names[ci - 1], f"{i:07d}.jpg"), rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    return stop - start


def generate(n: int, size: int, out: str, chunk: int, num_cpus: int) -> dict:
    """n images by Ray tasks (skipped when out already holds n); images/s."""
    import ray

    from inetseg.sources import synth

    have = sum(len(fs) for _, _, fs in os.walk(out)) if os.path.isdir(out) else 0
    if have == n:
        return {"images": n, "reused": True}
    shutil.rmtree(out, ignore_errors=True)
    for name in synth.class_names(TAGS):
        os.makedirs(os.path.join(out, name))
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(num_cpus=1)(render_chunk)
        t0 = time.perf_counter()
        done = sum(ray.get([task.remote(size, out, s, min(n, s + chunk)) for s in range(0, n, chunk)]))
        seconds = time.perf_counter() - t0
    finally:
        ray.shutdown()
    return {"images": done, "seconds": seconds, "images_per_s": done / seconds}


def subset(src: str, dst: str, n: int) -> str:
    """Links to the first n images (by index: every tag alike)."""
    if os.path.isdir(dst) and sum(len(fs) for _, _, fs in os.walk(dst)) == n:
        return dst
    shutil.rmtree(dst, ignore_errors=True)
    for tag in sorted(os.listdir(src)):
        os.makedirs(os.path.join(dst, tag))
        for f in sorted(os.listdir(os.path.join(src, tag))):
            if int(f.split(".")[0]) < n:
                os.symlink(os.path.join(src, tag, f), os.path.join(dst, tag, f))
    return dst


def dir_bytes(path: str) -> int:
    total = 0
    for d, _, fs in os.walk(path):
        for f in fs:
            try:
                total += os.path.getsize(os.path.join(d, f))
            except OSError:
                pass
    return total


def watch(cmd: list[str], interval: float, spill: str, log_path: str) -> dict:
    """Run cmd with its console into log_path; peaks of tree RSS/PSS, driver RSS and spill-folder bytes."""
    import psutil

    os.makedirs(spill, exist_ok=True)
    env = {**os.environ, "RAY_ADDRESS": "", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_object_spilling_config": json.dumps({"type": "filesystem", "params": {"directory_path": spill}})}
    t0 = time.perf_counter()
    with open(log_path, "wb") as console:
        proc = subprocess.Popen(cmd, stdout=console, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        root = psutil.Process(proc.pid)
        peak = {"rss": 0, "pss": 0, "driver_rss": 0, "spill": 0}
        while proc.poll() is None:
            mem = tree_memory(root)
            if mem is None:
                break
            peak["driver_rss"] = max(peak["driver_rss"], mem["root_rss"])
            peak["rss"], peak["pss"] = max(peak["rss"], mem["rss"]), max(peak["pss"], mem["pss"])
            peak["spill"] = max(peak["spill"], dir_bytes(spill))
            time.sleep(interval)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = open(log_path, "rb").read()[-1500:].decode(errors="replace")
        raise SystemExit(f"scale.py: error: {' '.join(cmd[:4])} failed: {tail}")
    return {"seconds": seconds, "peak_rss_bytes": peak["rss"], "peak_pss_bytes": peak["pss"],
            "driver_peak_rss_bytes": peak["driver_rss"], "spill_bytes": peak["spill"],
            "console_bytes": os.path.getsize(log_path)}


def ingest_run(args, src: str, out: str, n: int, work: str) -> dict:
    cmd = [sys.executable, "-m", "inetseg.cli", "ingest", f"source={src}", f"out={out}", f"max_side={args.size}",
           f"rows_per_shard={args.rows_per_shard}", "--num-cpus", str(args.num_cpus), "--no-resume"]
    got = watch(cmd, args.sample_seconds, os.path.join(work, f"spill-{n}"), os.path.join(work, f"console-{n}.log"))
    stats = json.load(open(os.path.join(out, "stats.json")))
    return {"images": n, "ok": stats["ok"], "images_per_s": n / got["seconds"], **got}


def attention_child(images: str, sample: int, out: str, num_cpus: int) -> None:
    """In a subprocess: a sample table of `images`, a random-weight demo classifier, the attention stage."""
    import pyarrow.parquet as pq
    import torch

    from inetseg import presets, shards
    from inetseg.models.classifier import build_classifier
    from inetseg.models.io import META_FILE, MODEL_FILE
    from inetseg.stages import attention
    from inetseg.stages.common import ensure_ray

    table = os.path.join(out, "sample")
    shards.prepare(table)
    rows = 0
    for i, f in enumerate(shards.parquet_files(images)):
        if rows >= sample:
            break
        t = pq.read_table(f).slice(0, sample - rows)
        shards.write_table(t, table, f"part-{i:05d}.parquet")
        rows += t.num_rows
    shards.mark_complete(table, "scale", {"classes": shards.read_marker(images)["classes"], "images": rows})
    width, size = presets.DEMO["classifier"]["width"], presets.DEMO["attention"]["input_size"]
    model = os.path.join(out, "classifier")
    os.makedirs(model, exist_ok=True)
    torch.save(build_classifier(TAGS, width).state_dict(), os.path.join(model, MODEL_FILE))
    meta = {"kind": "classifier", "num_classes": TAGS, "width": width, "input_size": 128}
    json.dump(meta, open(os.path.join(model, META_FILE), "w"))
    shards.mark_complete(model, "scale", meta)
    ensure_ray(num_cpus=num_cpus, quiet=True)
    cfg = C.AttentionConfig(images=table, model=model, out=os.path.join(out, "pseudo"), input_size=size,
                            # one CPU left for Ray Data's read tasks, or the pool holds every CPU and waits
                            compute=C.ComputeConfig(num_actors=max(1, num_cpus - 1), cpus_per_worker=1,
                                                    torch_threads=max(1, num_cpus // max(1, num_cpus - 1)),
                                                    inference_batch_size=32))
    t0 = time.perf_counter()
    done = attention.run(cfg, resume=False)
    print(json.dumps({"images": done["images"], "seconds": time.perf_counter() - t0}))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--images", type=int, default=100_000, help="N (the ingest runs at N/4 and N)")
    ap.add_argument("--size", type=int, default=64, help="image side")
    ap.add_argument("--chunk", type=int, default=1000, help="images per generating task")
    ap.add_argument("--rows-per-shard", type=int, default=1000)
    ap.add_argument("--attention-sample", type=int, default=2000)
    ap.add_argument("--num-cpus", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--sample-seconds", type=float, default=0.5)
    ap.add_argument("--workdir", default="", help="scratch folder, kept (default: a temp dir, removed after)")
    ap.add_argument("--attention-child", nargs=3, metavar=("IMAGES", "SAMPLE", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.attention_child:
        images, sample, out = args.attention_child
        attention_child(images, int(sample), out, args.num_cpus)
        return 0
    if args.images < 8:
        ap.error("--images must be at least 8")
    work = args.workdir or tempfile.mkdtemp(prefix="inetseg-scale-")
    os.makedirs(work, exist_ok=True)
    n, quarter = args.images, args.images // 4
    result: dict = {"settings": {k: v for k, v in vars(args).items() if k not in ("out", "attention_child")},
                    "versions": versions(), "machine": machine()}
    try:
        corpus = os.path.join(work, "corpus")
        result["generate"] = generate(n, args.size, corpus, args.chunk, args.num_cpus)
        print(f"generate: {json.dumps(result['generate'])}", flush=True)
        runs = {}
        for count, src in ((quarter, subset(corpus, os.path.join(work, f"first-{quarter}"), quarter)), (n, corpus)):
            runs[count] = ingest_run(args, src, os.path.join(work, f"ingest-{count}"), count, work)
            r = runs[count]
            print(f"ingest {count}: {r['images_per_s']:.0f} images/s, tree RSS {r['peak_rss_bytes'] / 2**20:.0f} MiB, "
                  f"driver {r['driver_peak_rss_bytes'] / 2**20:.0f} MiB, console {r['console_bytes']} bytes",
                  flush=True)
        result["ingest"] = {str(k): v for k, v in runs.items()}
        big, small = runs[n], runs[quarter]
        result.update({
            "rss_ratio_100k_vs_25k": big["peak_rss_bytes"] / small["peak_rss_bytes"],
            "pss_ratio_100k_vs_25k": big["peak_pss_bytes"] / small["peak_pss_bytes"],
            "driver_rss_ratio_100k_vs_25k": big["driver_peak_rss_bytes"] / small["driver_peak_rss_bytes"],
            "throughput_ratio_100k_vs_25k": big["images_per_s"] / small["images_per_s"],
            "console_bytes": big["console_bytes"], "spill_bytes": big["spill_bytes"]})
        done = subprocess.run([sys.executable, os.path.abspath(__file__), "--out", "-", "--num-cpus",
                               str(args.num_cpus), "--attention-child", os.path.join(work, f"ingest-{n}"),
                               str(args.attention_sample), os.path.join(work, "attention")],
                              capture_output=True, text=True, cwd=ROOT, env={**os.environ, "RAY_ADDRESS": ""})
        if done.returncode != 0:
            raise SystemExit(f"scale.py: error: attention failed: {done.stderr[-1500:]}")
        att = json.loads(done.stdout.strip().splitlines()[-1])
        result["attention"] = {**att, "images_per_s": att["images"] / att["seconds"],
                               "console_bytes": len(done.stdout) + len(done.stderr)}
        result["images_per_s"] = {"generate": result["generate"].get("images_per_s"),
                                  "ingest_25k": small["images_per_s"], "ingest_100k": big["images_per_s"],
                                  "attention": result["attention"]["images_per_s"]}
        result["goals"] = {"rss_ratio_100k_vs_25k <= 1.25": result["rss_ratio_100k_vs_25k"] <= 1.25,
                           "throughput_ratio_100k_vs_25k >= 0.9": result["throughput_ratio_100k_vs_25k"] >= 0.9,
                           "console_bytes < 1 MB": result["console_bytes"] < 1_000_000}
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    storage.write_json(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k.endswith(("ratio_100k_vs_25k", "bytes", "goals"))
                      or k == "images_per_s"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
