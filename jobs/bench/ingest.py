"""Ingest benchmark: Ray ingest against a parallel bare loop, against img2dataset, and its memory at N and 4N.

    python jobs/bench/ingest.py --out ingest.json [--parts loop,img2dataset,memory] \\
        [--photos ../shared/data/real-dev] [--loop-sizes 2000,8000,32000] [--download-sizes 5000,20000]

1. loop (`ratio_vs_parallel_loop`, goal >= 0.9; `ratio_vs_bare_loop` beside it): local files at each of
   --loop-sizes. Ray ingest (inetseg.stages.ingest.run in this process, Ray started before the clock) against
   the same ingest without Ray: the same listing and shard plan, the same per-shard function
   (inetseg.ingest.worker.ingest_shard: read, SHA-1, decode, validate, resize, pHash, JPEG, one zstd Parquet
   file per shard) mapped over a multiprocessing.Pool of one process per core (started before the clock), and
   the same duplicate pass and totals after. And the same in one process (today's bare-loop ratio).
2. img2dataset (`ratio_vs_img2dataset_steady`, goal >= 1.0): download from the offline Flickr (its own
   process, loopback HTTP) at two sizes. Both tools as cold CLI subprocesses timed end to end (interpreter,
   imports, Ray's or the process pool's start-up included); img2dataset pinned (--img2dataset-version, its own
   venv) with its documented throughput settings: processes = cores, --threads per process, shards of 1000+
   (`number_sample_per_shard` = ours), EXIF off, the same resize (longest side, only if bigger) and JPEG
   quality. A line through the two sizes gives each tool's fixed cost and steady-state images/s; Ray's own
   start-up (`ray.init` in a fresh interpreter) is reported alone.
3. memory (`pss_ratio_4n_vs_n`, goal <= 1.25): `inetseg ingest` as a subprocess on N and 4N real-size photos
   (--photos, each file linked again under new names until there are enough), the PSS of its whole process tree
   sampled every --sample-seconds, minus the peak PSS of an idle Ray started the same way. The test of the test:
   a loop that keeps every decoded image (`hoard`) measured the same way must miss the goal.

Every part writes its settings, the versions that ran and the medians with min and max over --repeats
(alternating which side goes first). Parts may run apart (each wants an idle machine) and be put into one file:
`--combine loop.json img2dataset.json memory.json --out ingest.json` (each part keeps its own run's settings).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from inetseg import config as C
from inetseg import download, imaging, storage
from inetseg.sources import synth
from jobs.bench.common import machine, spread, tree_memory, versions

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


# ---------------------------------------------------------------- corpora

def image_pool(args, work: str) -> list[str]:
    """The distinct files a tree is made of: --photos (every image under it) or a synthetic corpus."""
    if args.photos:
        files = sorted(f for f in storage.list_files(args.photos, EXTS) if "/masks/" not in f)
    else:
        synth.generate(C.SynthConfig(num_classes=5, images_per_class=args.pool // 5, test_images=1,
                                     image_size=args.size), os.path.join(work, "pool"), progress=False)
        files = sorted(storage.list_files(os.path.join(work, "pool", "search"), EXTS))
    if not files:
        raise SystemExit(f"ingest.py: error: no images under {args.photos or work}")
    return files


def tree(files: list[str], root: str, n: int, tags: int = 5) -> str:
    """A folder-per-tag tree of n links to `files`, repeated under new names when n exceeds them (the per-file
    work does not depend on the name; dedupe sets repeats aside only after every file was processed)."""
    if os.path.isdir(root) and sum(len(fs) for _, _, fs in os.walk(root)) == n:
        return root
    shutil.rmtree(root, ignore_errors=True)
    for t in range(tags):
        os.makedirs(os.path.join(root, f"tag{t}"))
    for i in range(n):
        src = files[i % len(files)]
        os.symlink(os.path.abspath(src), os.path.join(root, f"tag{i % tags}", f"{i:07d}{os.path.splitext(src)[1]}"))
    return root


def variant(img, k: int):
    """The k-th distinct picture made of one photo: k % 8 picks one of the 8 rotations and mirrorings (each moves the
    pHash far past a duplicate's few bits), k // 8 crops a further 4 % off two sides per step."""
    import numpy as np

    out = np.rot90(img, k % 4)
    out = out[:, ::-1] if (k // 4) % 2 else out
    cut = (k // 8) * 0.04
    h, w = out.shape[:2]
    return np.ascontiguousarray(out[int(h * cut):, int(w * cut):]) if cut else np.ascontiguousarray(out)


def distinct_tree(files: list[str], root: str, n: int, tags: int = 5) -> str:
    """Like tree(), with n distinct pictures: the first pass over `files` copies their bytes, each later pass k writes
    `variant(photo, k)` re-encoded (JPEG quality 92): different bytes (the offline Flickr names a photo by its bytes)
    and different pixels (the ingest's duplicate pass would otherwise set every repeat, and its original, aside as
    the same picture under two tags)."""
    import cv2

    if os.path.isdir(root) and sum(len(fs) for _, _, fs in os.walk(root)) == n:
        return root
    shutil.rmtree(root, ignore_errors=True)
    for t in range(tags):
        os.makedirs(os.path.join(root, f"tag{t}"))
    for i in range(n):
        src = files[i % len(files)]
        k = i // len(files)
        dst = os.path.join(root, f"tag{i % tags}", f"{i:07d}")
        if k == 0:
            shutil.copyfile(src, dst + os.path.splitext(src)[1])
            continue
        img = cv2.imread(src, cv2.IMREAD_COLOR)
        if img is None:
            raise SystemExit(f"ingest.py: error: cannot decode {src}")
        cv2.imwrite(dst + ".jpg", variant(img, k), [cv2.IMWRITE_JPEG_QUALITY, 92])
    return root


# ---------------------------------------------------------------- 1. Ray ingest against the same ingest without Ray

def _shard(spec: dict, out: str, limits, quality: int, policy, batch: int) -> dict:
    from inetseg.ingest.worker import ingest_shard

    return ingest_shard(spec, out, limits, quality, policy, batch)


def no_ray_ingest(cfg: C.IngestConfig, pool) -> dict:
    """inetseg's ingest with a process pool (or, pool None, one process) in place of Ray Data: same plan, same
    shard function, same duplicate pass."""
    from inetseg.ingest.duplicates import find_duplicates, write_duplicates
    from inetseg.ingest.listing import list_source
    from inetseg.ingest.plan import plan_shards
    from inetseg.ingest.stats import totals

    listing, _ = list_source(cfg.source, list(cfg.classes))
    specs = plan_shards(listing, cfg.rows_per_shard)
    storage.makedirs(storage.join(cfg.out, "_shards"))
    limits = imaging.ImageLimits(cfg.max_side, cfg.min_side, cfg.max_aspect, cfg.max_pixels)
    policy = download.FetchPolicy()
    jobs = [(s, storage.absolute(cfg.out), limits, cfg.jpeg_quality, policy, cfg.files_per_task) for s in specs]
    done = pool.starmap(_shard, jobs, chunksize=1) if pool is not None else [_shard(*j) for j in jobs]
    dups = find_duplicates(cfg.out, [s["name"] for s in specs if s["rows"]], cfg)
    write_duplicates(cfg.out, dups)
    return {"shards": len(done), **{k: v for k, v in totals(cfg.out, specs, dups).items() if k in ("total", "ok")}}


def part_loop(args, files: list[str], work: str) -> dict:
    """Ray ingest, the pool loop and the 1-process loop at each size, interleaved, alternating the order."""
    from inetseg.stages import ingest
    from inetseg.stages.common import ensure_ray

    ensure_ray(num_cpus=args.num_cpus, quiet=True)
    t0 = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")  # Ray's threads live in this process: no fork
    pool = ctx.Pool(args.num_cpus)
    pool.starmap(_warm, [()] * args.num_cpus)  # imports done in every pool process before the clock
    pool_start = time.perf_counter() - t0
    out: dict = {"pool_start_seconds": pool_start, "sizes": {}}
    try:
        for n in args.loop_sizes:
            src = tree(files, os.path.join(work, f"loop-{n}"), n)

            def cfg(o: str, src: str = src) -> C.IngestConfig:
                return C.IngestConfig(source=src, out=o, **common(args))

            sides = {"ray": lambda o: ingest.run(cfg(o), resume=False, progress=False),
                     "parallel_loop": lambda o: no_ray_ingest(cfg(o), pool),
                     "bare_loop": lambda o: no_ray_ingest(cfg(o), None)}
            if n > args.bare_max:
                del sides["bare_loop"]  # one process at 32k takes as long as the rest together
            per_s: dict[str, list[float]] = {k: [] for k in sides}
            oks: dict[str, int] = {}
            for r in range(args.repeats):
                for k in (list(sides) if r % 2 == 0 else list(reversed(sides))):
                    dest = os.path.join(work, f"out-{k}")
                    shutil.rmtree(dest, ignore_errors=True)
                    t1 = time.perf_counter()
                    meta = sides[k](dest)
                    per_s[k].append(n / (time.perf_counter() - t1))
                    oks[k] = int(meta["ok"])
                print(f"loop {n}: repeat {r + 1}/{args.repeats}: " + ", ".join(
                    f"{k} {per_s[k][-1]:.1f} images/s" for k in sides), flush=True)
            row = {"images_per_s": {k: spread(v) for k, v in per_s.items()}, "ok": oks,
                   "ratio_vs_parallel_loop": spread([a / b for a, b in zip(per_s["ray"], per_s["parallel_loop"])])}
            if "bare_loop" in sides:
                row["ratio_vs_bare_loop"] = spread([a / b for a, b in zip(per_s["ray"], per_s["bare_loop"])])
            out["sizes"][str(n)] = row
    finally:
        pool.terminate()
    return out


def _warm() -> None:
    import inetseg.ingest.worker  # noqa: F401


def common(args) -> dict:
    return {"max_side": args.max_side, "jpeg_quality": args.quality, "rows_per_shard": args.rows_per_shard,
            "files_per_task": args.files_per_task}


# ---------------------------------------------------------------- 2. against img2dataset, both cold from the CLI

class FakeFlickr:
    """`inetseg fake-flickr` in its own process, so serving costs the measured tools no CPU of their own."""

    def __init__(self, corpus: str, port: int):
        self.proc = subprocess.Popen([sys.executable, "-m", "inetseg.cli", "fake-flickr", "--corpus", corpus,
                                      "--port", str(port)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if "rest_url=" not in line:
            self.proc.kill()
            raise SystemExit(f"ingest.py: error: fake-flickr did not start: {line!r}")
        self.rest_url = line.strip().split("rest_url=", 1)[1]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def img2dataset_exe(venv: str, version: str) -> str:
    """img2dataset==version in its own venv (created on first use; never a project dependency)."""
    exe = os.path.join(venv, "bin", "img2dataset")
    if not os.path.exists(exe):
        print(f"installing img2dataset=={version} into {venv} (once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q", f"img2dataset=={version}"], check=True)
    return exe


def timed(cmd: list[str], env: dict | None = None) -> float:
    """Seconds of a subprocess from spawn to exit; SystemExit with its stderr tail when it fails."""
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if r.returncode != 0:
        raise SystemExit(f"ingest.py: error: {os.path.basename(cmd[0])} failed: {r.stderr[-1500:]}")
    return time.perf_counter() - t0


def ours_cmd(args, manifest_dir: str, out: str) -> list[str]:
    return [sys.executable, "-m", "inetseg.cli", "ingest", f"source={manifest_dir}", f"out={out}",
            f"max_side={args.max_side}", f"jpeg_quality={args.quality}", f"rows_per_shard={args.rows_per_shard}",
            f"files_per_task={args.files_per_task}", f"download_threads={args.threads}",
            f"per_host_concurrency={args.threads}", "allow_private_hosts=true", "--num-cpus", str(args.num_cpus),
            "--no-resume"]


def theirs_cmd(args, exe: str, url_file: str, out: str) -> list[str]:
    return [exe, "--url_list", url_file, "--input_format", "txt", "--output_folder", out, "--output_format",
            "parquet", "--image_size", str(args.max_side), "--resize_mode", "keep_ratio_largest",
            "--resize_only_if_bigger", "True", "--encode_format", "jpg", "--encode_quality", str(args.quality),
            "--processes_count", str(args.num_cpus), "--thread_count", str(args.threads),
            "--number_sample_per_shard", str(args.rows_per_shard), "--extract_exif", "False",
            "--distributor", "multiprocessing", "--timeout", "20", "--retries", "0", "--enable_wandb", "False",
            "--disallowed_header_directives", "[]"]


def line_fit(sizes: list[int], seconds: list[float]) -> dict:
    """Fixed cost and steady-state images/s from end-to-end seconds at two or more sizes (least squares)."""
    n = len(sizes)
    mx, my = sum(sizes) / n, sum(seconds) / n
    slope = sum((x - mx) * (y - my) for x, y in zip(sizes, seconds)) / sum((x - mx) ** 2 for x in sizes)
    return {"steady_images_per_s": 1.0 / slope if slope > 0 else float("inf"), "fixed_seconds": my - slope * mx}


def part_img2dataset(args, files: list[str], work: str) -> dict:
    """Both tools cold from their CLIs at each of --download-sizes, alternating; fit; Ray start-up alone."""
    import pyarrow.parquet as pq

    from inetseg.sources import flickr

    exe = img2dataset_exe(args.img2dataset_venv or os.path.expanduser(
        f"~/.cache/inetseg-bench/img2dataset-{args.img2dataset_version}"), args.img2dataset_version)
    big = max(args.download_sizes)
    # (named for its scheme: a --workdir tree of an earlier scheme, same count, is not reused)
    corpus = distinct_tree(files, os.path.join(work, "served-distinct-pixels"), big)
    server = FakeFlickr(corpus, port=18700 + os.getpid() % 1000)
    os.environ.setdefault("FLICKR_API_KEY", "bench")
    os.environ.setdefault("FLICKR_API_SECRET", "bench")
    result: dict = {"sizes": {}}
    try:
        crawl = os.path.join(work, "crawl")
        shutil.rmtree(crawl, ignore_errors=True)  # its URLs name this run's server port
        tags = storage.list_dirs(corpus)
        flickr.crawl(C.CrawlConfig(out=crawl, tags=tags, per_tag=big // len(tags) + 1, rest_url=server.rest_url,
                                   calls_per_hour=1e9), progress=False)
        manifest = pq.read_table(os.path.join(crawl, "manifest.parquet"))
        seconds: dict[str, dict[int, list[float]]] = {"ours": {}, "img2dataset": {}}
        for n in sorted(args.download_sizes):
            sub = os.path.join(work, f"crawl-{n}")
            os.makedirs(sub, exist_ok=True)
            pq.write_table(manifest.slice(0, n), os.path.join(sub, "manifest.parquet"))
            url_file = os.path.join(work, f"urls-{n}.txt")
            with open(url_file, "w") as f:
                f.write("\n".join(manifest.slice(0, n).column("url").to_pylist()) + "\n")
            cmds = {"ours": ours_cmd(args, sub, os.path.join(work, "dl-ours")),
                    "img2dataset": theirs_cmd(args, exe, url_file, os.path.join(work, "dl-i2d"))}
            for r in range(args.repeats):
                for k in (list(cmds) if r % 2 == 0 else list(reversed(cmds))):
                    shutil.rmtree(os.path.join(work, "dl-ours" if k == "ours" else "dl-i2d"), ignore_errors=True)
                    seconds[k].setdefault(n, []).append(timed(cmds[k], {**os.environ, "RAY_ADDRESS": ""}))
                print(f"download {n}: repeat {r + 1}/{args.repeats}: ours {seconds['ours'][n][-1]:.1f} s, "
                      f"img2dataset {seconds['img2dataset'][n][-1]:.1f} s", flush=True)
            result["sizes"][str(n)] = {k: spread(v[n]) for k, v in seconds.items()}
            result["sizes"][str(n)]["ok"] = {"img2dataset": i2d_successes(os.path.join(work, "dl-i2d")),
                                             # ours: ok after duplicates were set aside, and why the rest was
                                             "ours": json.load(open(os.path.join(work, "dl-ours", "stats.json")))}
    finally:
        server.close()
    sizes = sorted(args.download_sizes)
    fits = {k: line_fit(sizes, [spread(v[n])["median"] for n in sizes]) for k, v in seconds.items()}
    result["fit"] = fits
    result["ray_start_seconds"] = spread([ray_start(args.num_cpus) for _ in range(args.repeats)])
    result["img2dataset_version"] = args.img2dataset_version
    result["ratio_vs_img2dataset_steady"] = (fits["ours"]["steady_images_per_s"]
                                             / fits["img2dataset"]["steady_images_per_s"])
    result["ratio_vs_img2dataset_end_to_end"] = {str(n): spread([t / o for o, t in zip(
        seconds["ours"][n], seconds["img2dataset"][n])]) for n in sizes}
    return result


def i2d_successes(out: str) -> int:
    ok = 0
    for name in os.listdir(out) if os.path.isdir(out) else []:
        if name.endswith("_stats.json"):
            ok += json.load(open(os.path.join(out, name))).get("successes", 0)
    return ok


def ray_start(num_cpus: int) -> float:
    """Seconds for `import ray; ray.init(); ray.shutdown()` in a fresh interpreter, minus the bare interpreter."""
    code = f"import ray; ray.init(num_cpus={num_cpus}, include_dashboard=False); ray.shutdown()"
    env = {**os.environ, "RAY_ADDRESS": "", "RAY_USAGE_STATS_ENABLED": "0"}
    return timed([sys.executable, "-c", code], env) - timed([sys.executable, "-c", "pass"], env)


# ---------------------------------------------------------------- 3. memory at N and 4N

def peak_tree(cmd: list[str], interval: float) -> dict:
    """Run cmd; sample PSS (and RSS) summed over its process tree; the peaks and the seconds."""
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "RAY_ADDRESS": "", "RAY_USAGE_STATS_ENABLED": "0"})
    root = psutil.Process(proc.pid)
    peak_pss = peak_rss = 0
    while proc.poll() is None:
        mem = tree_memory(root)
        if mem is None:
            break
        peak_pss, peak_rss = max(peak_pss, mem["pss"]), max(peak_rss, mem["rss"])
        time.sleep(interval)
    err = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"ingest.py: error: {' '.join(cmd[:5])} failed: {err[-1500:]}")
    return {"peak_pss_bytes": peak_pss, "peak_rss_bytes": peak_rss, "seconds": time.perf_counter() - t0}


def hoard(source: str, max_side: int) -> None:
    """The test of the meter: read and decode every image and keep them all (what a non-streaming ingest does)."""
    limits = imaging.ImageLimits(max_side=100_000)
    kept = []
    for path in storage.list_files(source, EXTS):
        kept.append(imaging.prepare(storage.read_bytes(path), limits))
    print(len(kept), sum(k.nbytes for k in kept))


def part_memory(args, files: list[str], work: str) -> dict:
    """Net peak PSS (tree minus an idle Ray's) of `inetseg ingest` and of `hoard` at N and 4N."""
    idle_code = (f"import ray, time; ray.init(num_cpus={args.num_cpus}, include_dashboard=False); "
                 f"time.sleep({args.idle_seconds})")
    idle = [peak_tree([sys.executable, "-c", idle_code], args.sample_seconds)["peak_pss_bytes"]
            for _ in range(args.repeats)]
    idle_pss = spread(idle)["median"]
    out: dict = {"idle_ray_pss_bytes": spread(idle), "runs": {}}
    n = args.mem_images
    for label, count in (("n", n), ("4n", 4 * n)):
        src = tree(files, os.path.join(work, f"mem-{label}"), count)
        cmds = {"ingest": [sys.executable, "-m", "inetseg.cli", "ingest", f"source={src}",
                           f"out={work}/mem-out-{label}", f"max_side={args.max_side}",
                           f"jpeg_quality={args.quality}", f"rows_per_shard={args.rows_per_shard}",
                           f"files_per_task={args.files_per_task}", "--num-cpus", str(args.num_cpus), "--no-resume"],
                "hoard": [sys.executable, os.path.abspath(__file__), "--hoard", src, "--out", "-"]}
        for k, cmd in cmds.items():
            runs = [peak_tree(cmd, args.sample_seconds) for _ in range(args.repeats)]
            shutil.rmtree(f"{work}/mem-out-{label}", ignore_errors=True)
            out["runs"][f"{k}_{label}"] = {"images": count, **{m: spread([r[m] for r in runs]) for m in (
                "peak_pss_bytes", "peak_rss_bytes", "seconds")}}
            print(f"memory {k} {label} ({count} images): peak PSS "
                  f"{out['runs'][f'{k}_{label}']['peak_pss_bytes']['median'] / 2**20:.0f} MiB", flush=True)
    runs = out["runs"]

    def net(key: str) -> float:
        return max(1.0, runs[key]["peak_pss_bytes"]["median"] - idle_pss)

    out["pss_ratio_4n_vs_n"] = net("ingest_4n") / net("ingest_n")
    # hoard runs no Ray: its tree is the bare process, nothing to subtract
    out["hoard_pss_ratio_4n_vs_n"] = runs["hoard_4n"]["peak_pss_bytes"]["median"] / runs["hoard_n"][
        "peak_pss_bytes"]["median"]
    return out


# ---------------------------------------------------------------- main

def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--parts", default="loop,img2dataset,memory", help="comma-separated: loop, img2dataset, memory")
    ap.add_argument("--photos", default="", help="real photos (any folder tree); default: a synthetic pool")
    ap.add_argument("--pool", type=int, default=2000, help="synthetic pool: distinct images (without --photos)")
    ap.add_argument("--size", type=int, default=400, help="synthetic pool: image side")
    ap.add_argument("--loop-sizes", default="2000,8000,32000")
    ap.add_argument("--bare-max", type=int, default=8000, help="largest size the 1-process loop also runs at")
    ap.add_argument("--download-sizes", default="5000,20000")
    ap.add_argument("--mem-images", type=int, default=5000, help="N of the memory part (it runs N and 4N)")
    ap.add_argument("--max-side", type=int, default=256)
    ap.add_argument("--quality", type=int, default=90)
    ap.add_argument("--rows-per-shard", type=int, default=1000, help="both tools' shard size")
    ap.add_argument("--files-per-task", type=int, default=64)
    ap.add_argument("--num-cpus", type=int, default=os.cpu_count() or 2, help="processes / Ray CPUs on both sides")
    ap.add_argument("--threads", type=int, default=32, help="download threads per process, both tools")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sample-seconds", type=float, default=0.2, help="memory sampling interval")
    ap.add_argument("--idle-seconds", type=float, default=15.0, help="how long the idle Ray is sampled")
    ap.add_argument("--img2dataset-version", default="1.47.0")
    ap.add_argument("--img2dataset-venv", default="", help="default: ~/.cache/inetseg-bench/img2dataset-VERSION")
    ap.add_argument("--workdir", default="", help="scratch folder (default: a temp dir, removed after)")
    ap.add_argument("--combine", nargs="+", metavar="F", help="write --out from these part files (run nothing)")
    ap.add_argument("--hoard", default="", help=argparse.SUPPRESS)  # the memory part's test-of-the-test child
    args = ap.parse_args(argv)
    args.loop_sizes = [int(x) for x in args.loop_sizes.split(",") if x]
    args.download_sizes = [int(x) for x in args.download_sizes.split(",") if x]
    unknown = set(args.parts.split(",")) - {"loop", "img2dataset", "memory"}
    if unknown:
        ap.error(f"unknown part(s) {sorted(unknown)}")
    if "img2dataset" in args.parts and len(set(args.download_sizes)) < 2:
        ap.error("--download-sizes needs two different sizes (a line through them gives the steady state)")
    return args


def summarise(result: dict) -> dict:
    """The issue's top-level keys and the goals, from whichever parts `result` holds."""
    if "loop" in result:
        sizes = result["loop"]["sizes"]
        result["ratio_vs_parallel_loop"] = {n: s["ratio_vs_parallel_loop"]["median"] for n, s in sizes.items()}
        result["ratio_vs_bare_loop"] = {n: s["ratio_vs_bare_loop"]["median"] for n, s in sizes.items()
                                        if "ratio_vs_bare_loop" in s}
    if "img2dataset" in result:
        result["ratio_vs_img2dataset_steady"] = result["img2dataset"]["ratio_vs_img2dataset_steady"]
    if "memory" in result:
        result["pss_ratio_4n_vs_n"] = result["memory"]["pss_ratio_4n_vs_n"]
        result["hoard_pss_ratio_4n_vs_n"] = result["memory"]["hoard_pss_ratio_4n_vs_n"]
    result["goals"] = {
        "ratio_vs_parallel_loop >= 0.9": (all(v >= 0.9 for v in result["ratio_vs_parallel_loop"].values())
                                          if "ratio_vs_parallel_loop" in result else None),
        "ratio_vs_img2dataset_steady >= 1.0": (result["ratio_vs_img2dataset_steady"] >= 1.0
                                               if "ratio_vs_img2dataset_steady" in result else None),
        "pss_ratio_4n_vs_n <= 1.25": result["pss_ratio_4n_vs_n"] <= 1.25 if "pss_ratio_4n_vs_n" in result else None,
        "hoard misses it (the meter can fail)": (result["hoard_pss_ratio_4n_vs_n"] > 1.25
                                                 if "hoard_pss_ratio_4n_vs_n" in result else None),
    }
    return result


def combine(paths: list[str]) -> dict:
    """One result from part files run apart (each on an idle machine): every part keeps the settings, versions and
    machine of the run that measured it; the loop part's sizes are pooled (a later file wins a size)."""
    result: dict = {"combined_from": {}}
    for path in paths:
        try:
            with open(path) as f:
                got = json.load(f)
        except (OSError, ValueError) as e:
            raise SystemExit(f"ingest.py: error: cannot read {path}: {e}") from None
        run = {k: got.get(k) for k in ("settings", "versions", "machine")}
        for part in ("loop", "img2dataset", "memory"):
            if part not in got:
                continue
            result["combined_from"].setdefault(part, []).append(os.path.basename(path))
            if part == "loop" and "loop" in result:
                result["loop"]["sizes"].update(got["loop"]["sizes"])
                result["loop"].setdefault("runs", []).append(run)
                continue
            result[part] = {**got[part], "runs": [run]}
    if len(result) == 1:
        raise SystemExit(f"ingest.py: error: no loop, img2dataset or memory part in {', '.join(paths)}")
    return summarise(result)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.hoard:
        hoard(args.hoard, args.max_side)
        return 0
    if args.combine:
        result = combine(args.combine)
        storage.write_json(args.out, result)
        print(json.dumps({k: v for k, v in result.items() if k.startswith(("ratio", "pss", "goals"))}, indent=2))
        return 0
    parts = args.parts.split(",")
    work = args.workdir or tempfile.mkdtemp(prefix="inetseg-bench-ingest-")
    os.makedirs(work, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "hoard", "combine")}
    result: dict = {"settings": settings, "versions": versions(), "machine": machine()}
    try:
        files = image_pool(args, work)
        result["settings"]["distinct_files"] = len(files)
        if "loop" in parts:
            result["loop"] = part_loop(args, files, work)
            import ray

            ray.shutdown()
        if "img2dataset" in parts:
            result["img2dataset"] = part_img2dataset(args, files, work)
        if "memory" in parts:
            result["memory"] = part_memory(args, files, work)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    summarise(result)
    storage.write_json(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k.startswith(("ratio", "pss", "hoard", "goals"))}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
