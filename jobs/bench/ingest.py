"""Ingest benchmark: Ray ingest vs a bare loop, vs img2dataset on the same URLs, and memory at N vs 4N.

    python jobs/bench/ingest.py --out ingest.json [--images 8000] [--rows-per-shard 500] \
        [--photos ../shared/data/camvid-train/images]

1. Local files: images/s of `inetseg ingest` (Ray Data, all cores) against a bare single-process
   read -> decode -> resize -> JPEG loop over the same files (`ratio_vs_bare_loop`; goal >= 1.6 on 2 cores).
2. Download + ingest from the offline Flickr (`inetseg fake-flickr`, its own process) against
   img2dataset on the same URL list with the same resize and JPEG settings (`ratio_vs_img2dataset`;
   goal >= 1.0). img2dataset goes into its own virtual environment (created on first use, never a
   project dependency); `--no-img2dataset` skips that part.
3. Peak RSS of the whole ingest process tree (driver, raylet, workers) at N and 4N images
   (`rss_ratio_4n_vs_n`; goal <= 1.25: the ingest streams).

Each pair runs side by side in this script, alternating, best of `--repeats`, because the machine is shared.
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
from inetseg import imaging, storage
from inetseg.sources import synth

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_corpus(root: str, n: int, size: int, classes: int = 5) -> str:
    """A synthetic folder-per-tag corpus of about n images; returns its search/ folder."""
    synth.generate(C.SynthConfig(num_classes=classes, images_per_class=max(1, n // classes), test_images=1,
                                 image_size=size), root, progress=False)
    return os.path.join(root, "search")


def photo_tree(photos: str, root: str, n: int) -> str:
    """A one-tag tree of links to real photos (e.g. CamVid street scenes), repeated up to n files."""
    files = sorted(storage.list_files(photos, (".png", ".jpg", ".jpeg")))
    if not files:
        raise SystemExit(f"no photos in {photos}")
    tag = os.path.join(root, "street")
    os.makedirs(tag, exist_ok=True)
    for i in range(n):
        src = files[i % len(files)]
        dst = os.path.join(tag, f"{i:06d}{os.path.splitext(src)[1]}")
        if not os.path.exists(dst):
            os.symlink(os.path.abspath(src), dst)
    return root


def subset_tree(source: str, root: str, n: int) -> str:
    """Links to the first n files (round-robin over tags) of a folder-per-tag tree."""
    shutil.rmtree(root, ignore_errors=True)
    tags = storage.list_dirs(source)
    per = {t: storage.list_files(os.path.join(source, t)) for t in tags}
    k = 0
    for i in range(max(len(v) for v in per.values())):
        for t in tags:
            if i < len(per[t]) and k < n:
                os.makedirs(os.path.join(root, t), exist_ok=True)
                os.symlink(per[t][i], os.path.join(root, t, os.path.basename(per[t][i])))
                k += 1
    return root


def bare_loop(source: str, max_side: int, quality: int) -> dict:
    """The baseline: one process, one file after another, decode -> validate -> resize -> JPEG."""
    files = [f for t in storage.list_dirs(source) for f in storage.list_files(os.path.join(source, t))]
    limits = imaging.ImageLimits(max_side=max_side)
    t0 = time.perf_counter()
    ok = nbytes = 0
    for f in files:
        try:
            jpeg, _, _ = imaging.process(storage.read_bytes(f), limits, quality)
            ok += 1
            nbytes += len(jpeg)
        except imaging.ImageError:
            pass
    dt = time.perf_counter() - t0
    return {"images": len(files), "ok": ok, "seconds": dt, "images_per_second": len(files) / dt, "jpeg_bytes": nbytes}


def ray_ingest(source: str, out: str, **overrides) -> dict:
    """`inetseg ingest` in this process (Ray already started), from scratch."""
    from inetseg.stages import ingest

    cfg = C.IngestConfig(source=source, out=out, **overrides)
    t0 = time.perf_counter()
    meta = ingest.run(cfg, resume=False, progress=False)
    dt = time.perf_counter() - t0
    return {"images": meta["total"], "ok": meta["ok"], "seconds": dt, "images_per_second": meta["total"] / dt,
            "jpeg_bytes": meta.get("image_bytes", 0), "failed": meta["failed"]}


class FakeFlickrProcess:
    """`inetseg fake-flickr` in its own process, so serving costs no CPU time of the measured process."""

    def __init__(self, corpus: str, port: int):
        self.proc = subprocess.Popen([sys.executable, "-m", "inetseg.cli", "fake-flickr", "--corpus", corpus,
                                      "--port", str(port)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
        line = self.proc.stdout.readline()
        if "rest_url=" not in line:
            self.proc.kill()
            raise SystemExit(f"fake-flickr did not start: {line!r}")
        self.rest_url = line.strip().split("rest_url=", 1)[1]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def img2dataset_venv(path: str) -> str:
    """The img2dataset executable in its own venv (created and installed on first use)."""
    exe = os.path.join(path, "bin", "img2dataset")
    if not os.path.exists(exe):
        print(f"installing img2dataset into {path} (once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", path], check=True)
        subprocess.run([os.path.join(path, "bin", "pip"), "install", "-q", "img2dataset"], check=True)
    return exe


def run_img2dataset(exe: str, urls: list[str], out: str, max_side: int, quality: int, processes: int,
                    threads: int) -> dict:
    """img2dataset over the URL list: same max side (keep_ratio_largest, only if bigger), JPEG quality."""
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    url_file = os.path.join(out, "..", "urls.txt")
    with open(url_file, "w") as f:
        f.write("\n".join(urls) + "\n")
    cmd = [exe, "--url_list", url_file, "--input_format", "txt", "--output_folder", out,
           "--output_format", "parquet", "--image_size", str(max_side), "--resize_mode", "keep_ratio_largest",
           "--resize_only_if_bigger", "True", "--encode_format", "jpg", "--encode_quality", str(quality),
           "--processes_count", str(processes), "--thread_count", str(threads), "--number_sample_per_shard", "100",
           "--distributor", "multiprocessing", "--timeout", "20", "--retries", "0", "--enable_wandb", "False",
           "--disallowed_header_directives", "[]"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"img2dataset failed: {r.stderr[-1500:]}")
    ok = total = 0
    for name in os.listdir(out):
        if name.endswith("_stats.json"):
            s = json.load(open(os.path.join(out, name)))
            ok += s.get("successes", 0)
            total += s.get("count", 0)
    return {"images": total, "ok": ok, "seconds": dt, "images_per_second": total / dt}


def peak_rss(cmd: list[str], interval: float = 0.05) -> dict:
    """Run cmd; sample the summed RSS of its whole process tree; return the peak and the wall time."""
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "RAY_ADDRESS": ""})
    peak, peak_workers = 0, 0
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            family = [root, *root.children(recursive=True)]
            rss = {}
            for p in family:
                try:
                    rss[p.pid] = (p.memory_info().rss, " ".join(p.cmdline()[:3]))
                except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                    pass
            peak = max(peak, sum(v for v, _ in rss.values()))
            peak_workers = max(peak_workers, sum(v for v, c in rss.values() if "default_worker" in c or "ray::" in c))
        except psutil.NoSuchProcess:
            break
        time.sleep(interval)
    err = proc.stderr.read()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed: {err[-1500:]}")
    return {"peak_rss_bytes": peak, "peak_worker_rss_bytes": peak_workers, "seconds": time.perf_counter() - t0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--images", type=int, default=8000, help="local-file images for part 1")
    ap.add_argument("--size", type=int, default=400, help="side of the synthetic images (part 1)")
    ap.add_argument("--photos", default="", help="folder of real photos to use in part 1 instead of synthetic ones")
    ap.add_argument("--max-side", type=int, default=256, help="ingest resize target (both sides of each pair)")
    ap.add_argument("--download-images", type=int, default=2000, help="URLs for part 2")
    ap.add_argument("--mem-images", type=int, default=1000, help="N for part 3 (also runs 4N)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rows-per-shard", type=int, default=500, help="ingest shard size (one Ray task per shard)")
    ap.add_argument("--files-per-task", type=int, default=64, help="files per batch inside a shard task")
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("--threads", type=int, default=16, help="download threads per process (both tools)")
    ap.add_argument("--img2dataset-venv", default=os.path.expanduser("~/.cache/inetseg-bench/img2dataset-venv"))
    ap.add_argument("--no-img2dataset", action="store_true")
    ap.add_argument("--workdir", default="", help="scratch folder (default: a temp dir, removed after)")
    args = ap.parse_args()

    import ray

    from inetseg.sources import flickr
    from inetseg.stages.common import ensure_ray

    work = args.workdir or tempfile.mkdtemp(prefix="inetseg-bench-ingest-")
    os.makedirs(work, exist_ok=True)
    result: dict = {"machine": {"cpus": os.cpu_count(), "num_cpus": args.num_cpus}, "max_side": args.max_side,
                    "images": args.images, "rows_per_shard": args.rows_per_shard, "files_per_task": args.files_per_task}
    q = 90
    common = {"max_side": args.max_side, "jpeg_quality": q, "rows_per_shard": args.rows_per_shard,
              "files_per_task": args.files_per_task}
    try:
        # ---- 1. local files
        if args.photos:
            src1 = photo_tree(args.photos, os.path.join(work, "photos"), args.images)
        else:
            src1 = make_corpus(os.path.join(work, "local"), args.images, args.size)
        ensure_ray(num_cpus=args.num_cpus)
        bare, cold, warm = [], [], []
        for _ in range(args.repeats):
            bare.append(bare_loop(src1, args.max_side, q))
            # Ray kills idle workers within seconds, so the run after the bare loop starts its worker
            # processes again (cold); the run right after it finds them (warm), as every shard after
            # the first few does in a long ingest. Both are reported.
            cold.append(ray_ingest(src1, os.path.join(work, "out1"), **common))
            warm.append(ray_ingest(src1, os.path.join(work, "out1"), **common))
        b, o, c = (max(runs, key=lambda r: r["images_per_second"]) for runs in (bare, warm, cold))
        result["local"] = {"source": "photos:" + args.photos if args.photos else f"synthetic {args.size}px",
                           "bare_loop": b, "ray_ingest": o, "ray_ingest_cold": c,
                           "runs_images_per_second": {"bare_loop": [r["images_per_second"] for r in bare],
                                                      "ray_ingest_cold": [r["images_per_second"] for r in cold],
                                                      "ray_ingest_warm": [r["images_per_second"] for r in warm]}}
        result["ratio_vs_bare_loop"] = o["images_per_second"] / b["images_per_second"]
        result["ratio_vs_bare_loop_cold"] = c["images_per_second"] / b["images_per_second"]
        print(f"local: bare {b['images_per_second']:.1f} img/s, ray {o['images_per_second']:.1f} img/s warm "
              f"({c['images_per_second']:.1f} cold) -> {result['ratio_vs_bare_loop']:.2f}x "
              f"({result['ratio_vs_bare_loop_cold']:.2f}x cold)", flush=True)

        # ---- 2. download + ingest
        src2 = make_corpus(os.path.join(work, "dl"), args.download_images, args.size)
        server = FakeFlickrProcess(src2, port=18700 + os.getpid() % 1000)
        try:
            os.environ.setdefault("FLICKR_API_KEY", "bench")
            os.environ.setdefault("FLICKR_API_SECRET", "bench")
            tags = storage.list_dirs(src2)
            crawl_dir = os.path.join(work, "crawl")
            shutil.rmtree(crawl_dir, ignore_errors=True)  # its URLs name this run's server port
            flickr.crawl(C.CrawlConfig(out=crawl_dir, tags=tags, per_tag=args.download_images // len(tags),
                                       rest_url=server.rest_url, calls_per_hour=1e9), progress=False)
            import pyarrow.parquet as pq

            urls = pq.read_table(os.path.join(crawl_dir, "manifest.parquet")).column("url").to_pylist()
            dl = {"download_threads": args.threads, "per_host_concurrency": args.threads,
                  "allow_private_hosts": True, "dedupe": True}
            ours2, theirs = [], []
            exe = None if args.no_img2dataset else img2dataset_venv(args.img2dataset_venv)
            for _ in range(args.repeats):
                # Ours cold too: img2dataset starts its worker processes on every run.
                ours2.append(ray_ingest(crawl_dir, os.path.join(work, "out2"), **common, **dl))
                if exe:
                    theirs.append(run_img2dataset(exe, urls, os.path.join(work, "i2d"), args.max_side, q,
                                                  args.num_cpus, args.threads))
            o2 = max(ours2, key=lambda r: r["images_per_second"])
            result["download"] = {"urls": len(urls), "ray_ingest": o2}
            print(f"download: ray {o2['images_per_second']:.1f} img/s", flush=True)
            if theirs:
                t2 = max(theirs, key=lambda r: r["images_per_second"])
                result["download"]["img2dataset"] = t2
                result["ratio_vs_img2dataset"] = o2["images_per_second"] / t2["images_per_second"]
                print(f"download: img2dataset {t2['images_per_second']:.1f} img/s "
                      f"-> {result['ratio_vs_img2dataset']:.2f}x", flush=True)
        finally:
            server.close()
        ray.shutdown()

        # ---- 3. memory at N and 4N (each ingest in its own process tree, Ray included)
        big = make_corpus(os.path.join(work, "mem4n"), 4 * args.mem_images, 160)
        small = subset_tree(big, os.path.join(work, "memn"), args.mem_images)
        mem = {}
        for label, src in (("n", small), ("4n", big)):
            cmd = [sys.executable, "-m", "inetseg.cli", "ingest", f"source={src}", f"out={work}/mem-out-{label}",
                   f"max_side={args.max_side}", "rows_per_shard=100", "files_per_task=32", "--num-cpus",
                   str(args.num_cpus), "--no-resume"]
            mem[label] = {"images": args.mem_images * (4 if label == "4n" else 1), **peak_rss(cmd)}
            print(f"memory {label}: {mem[label]['peak_rss_bytes'] / 2**20:.0f} MiB peak tree RSS", flush=True)
        result["memory"] = mem
        result["rss_ratio_4n_vs_n"] = mem["4n"]["peak_rss_bytes"] / mem["n"]["peak_rss_bytes"]
        result["worker_rss_ratio_4n_vs_n"] = (mem["4n"]["peak_worker_rss_bytes"]
                                              / max(1, mem["n"]["peak_worker_rss_bytes"]))
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    storage.write_json(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k.startswith(("ratio", "rss", "worker"))}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
