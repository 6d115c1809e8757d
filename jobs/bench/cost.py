"""A cost model for the paper preset on a million crawled images: GPU-hours, node-hours and on-demand cost per
cluster config, from the preset's own schedules, CPU rates measured here and GPU rates as published.

    python jobs/bench/cost.py --out F.json [--images 1000000] [--kept 0.68] [--ingest-json results/ingest.json]

Work per stage, in image passes at the preset's input sizes (read from the config, not typed in):
  filter     3 rounds: a classifier trained for its max_steps x batch (or epochs x images), then every image
             of the round scored once (a forward)
  classifier max_steps x batch (224 px)
  attention  each kept image once: forward + excitation backward to conv3 (counted as 2 forwards)
  segmenter  max_steps x batch (321 px: (321/224)^2 the classifier's pixels per image)
  finetune   the held-out share scored (2 forwards: segmenter + Eqn 12's classifier) and the segmenter's schedule
             again (include_initial: on the first labels too)
  ingest     CPU: every crawled image downloaded, decoded, hashed, resized, encoded (the measured per-core rate)
  crf        CPU: the test split only (negligible at 1.5k images; per-core rate measured by bench/crf.py)
  attention post-processing
             CPU: Eqn 9's segments and Eqn 10 for each kept image at its ingested size (500 px), in CPU tasks beside
             the GPU actors (attention.postprocess=auto); per-image seconds measured by bench/attention.py (`paper`
             net: 1 / full path rate - 1 / maps rate), spread over the CPU workers' cores

GPU rate (assumed, cited): NVIDIA DeepLearningExamples, ResNet-50 v1.5 PyTorch, pytorch-21.03 container:
1x V100 16GB mixed-precision training 1200 img/s, 1x A100 80GB 2470 img/s (224 px). GoogLeNet needs ~1.5
GFLOPs per 224 px image against ResNet-50's ~4.1, so ResNet-50's rate is a floor for our classifier; inference
is taken as 3x training (one forward against forward + backward of about twice its cost). Other GPUs are scaled
from V100 by memory bandwidth (CNN training with AMP is bandwidth-bound at these sizes): V100 900 GB/s, A10G
600 GB/s, T4 320 GB/s, L4 300 GB/s (NVIDIA data sheets). DDP efficiency 0.85 at 8 GPUs (the same README: 6.9x on
8 V100). Prices: on-demand list prices (AWS us-west-2, GCP us-central1), as given in PRICES below; check them
before you budget.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from inetseg import pipeline, storage

V100_TRAIN_224 = 1200.0  # img/s, ResNet-50 v1.5 AMP, NVIDIA DeepLearningExamples (a floor for GoogLeNet)
INFERENCE_OVER_TRAIN = 3.0
BANDWIDTH = {"V100": 900, "A10G": 600, "T4": 320, "L4": 300}  # GB/s, NVIDIA data sheets
DDP_EFFICIENCY = 0.85
# $/hour on demand: the GPU worker type (1 GPU each) and the CPU head of each config in cluster/.
PRICES = {
    "aws": {"gpu_worker": ("g5.xlarge", "A10G", 1.006), "head": ("m5.2xlarge", 0.384),
            "cpu_worker": ("m5.4xlarge", 16, 0.768)},
    "gcp": {"gpu_worker": ("n1-standard-8 + T4", "T4", 0.380 + 0.350), "head": ("n1-standard-8", 0.380),
            "cpu_worker": ("n1-standard-16", 16, 0.760)},
    "gcp-l4": {"gpu_worker": ("g2-standard-8", "L4", 0.854), "head": ("n1-standard-8", 0.380),
               "cpu_worker": ("n1-standard-16", 16, 0.760)},
}


def passes(cfg, images: int, kept: float) -> dict[str, dict]:
    """Image passes per stage (train = forward + backward; infer = forward) in 224 px equivalents."""
    def train(c, n: int) -> float:
        steps = getattr(c, "max_steps", 0)
        return steps * c.batch_size if steps else c.epochs * n

    seg_scale = (cfg.segmenter.input_size / 224) ** 2
    rounds, n, filt_train, filt_infer = cfg.filter.rounds, float(images), 0.0, 0.0
    for _ in range(rounds):  # each round keeps a share; spread the paper's overall drop evenly
        filt_train += train(cfg.filter.train, int(n))
        filt_infer += n
        n *= kept ** (1 / max(1, rounds))
    k = images * kept
    held = k * cfg.split.share if cfg.finetune.enabled else 0.0
    return {
        "filter": {"train": filt_train, "infer": filt_infer},
        "classifier": {"train": train(cfg.classifier, int(k - held)), "infer": 0.0},
        "attention": {"train": 0.0, "infer": 2 * (k - held) * (cfg.attention.input_size / 224) ** 2},
        "segmenter": {"train": train(cfg.segmenter, int(k - held)) * seg_scale, "infer": 0.0},
        "finetune": {"train": train(cfg.segmenter, int(k)) * seg_scale if cfg.finetune.enabled else 0.0,
                     "infer": 2 * held * seg_scale},
    }


def gpu_hours(work: dict[str, dict], gpu: str) -> dict[str, float]:
    rate = V100_TRAIN_224 * BANDWIDTH[gpu] / BANDWIDTH["V100"]
    return {s: (w["train"] / rate + w["infer"] / (rate * INFERENCE_OVER_TRAIN)) / 3600 for s, w in work.items()}


def post_seconds(attention_json: str, default: float) -> float:
    """CPU seconds of Eqn 9-10 per 500 x 375 photo: the paper net's full path minus its maps (bench/attention.py)."""
    if attention_json and os.path.exists(attention_json):
        rates = json.load(open(attention_json))["nets"]["paper"]["images_per_s"]
        return 1 / rates["full"]["median"] - 1 / rates["maps"]["median"]
    return default


def table(args, cfg) -> dict:
    work = passes(cfg, args.images, args.kept)
    post_s = post_seconds(args.attention_json, args.post_seconds)
    held = args.images * args.kept * (cfg.split.share if cfg.finetune.enabled else 0.0)
    post_core_h = (args.images * args.kept - held) * post_s / 3600
    ingest_rate = args.ingest_per_core
    if args.ingest_json and os.path.exists(args.ingest_json):
        loop = json.load(open(args.ingest_json)).get("loop", {}).get("sizes", {})
        if loop:  # the largest size's Ray ingest, per core
            big = loop[max(loop, key=int)]
            ingest_rate = big["images_per_s"]["ray"]["median"] / json.load(open(args.ingest_json))["settings"][
                "num_cpus"]
    out: dict = {"images": args.images, "kept": args.kept, "passes": work, "ingest_images_per_core_s": ingest_rate,
                 "attention_post_seconds_per_image": post_s, "attention_post_core_hours": round(post_core_h, 1),
                 # Before attention.postprocess: Eqn 9-10 inside the GPU actors, each GPU idle while its CPU segments
                 "attention_post_hours_inside_gpu_actors": round(post_core_h / cfg.attention.compute.num_actors, 1),
                 "configs": {}}
    for name, p in PRICES.items():
        worker, gpu, price = p["gpu_worker"]
        per_stage = gpu_hours(work, gpu)
        gpu_h = sum(per_stage.values())
        wall_h = gpu_h / (args.gpus * DDP_EFFICIENCY)
        cpu_type, vcpus, cpu_price = p["cpu_worker"]
        ingest_core_h = args.images / ingest_rate / 3600
        ingest_wall_h = ingest_core_h / (args.cpu_workers * vcpus)
        post_wall_h = post_core_h / (args.cpu_workers * vcpus)
        cost = (gpu_h / DDP_EFFICIENCY) * price + (ingest_wall_h + post_wall_h) * args.cpu_workers * cpu_price \
            + (wall_h + ingest_wall_h + post_wall_h) * p["head"][1]
        out["configs"][name] = {
            "gpu_worker": worker, "gpu": gpu, "gpus": args.gpus, "gpu_hours": round(gpu_h, 1),
            "gpu_hours_per_stage": {k: round(v, 1) for k, v in per_stage.items()},
            "wall_hours_gpu_stages": round(wall_h, 1), "cpu_workers": f"{args.cpu_workers} x {cpu_type}",
            "ingest_core_hours": round(ingest_core_h, 1), "ingest_wall_hours": round(ingest_wall_h, 2),
            "attention_post_wall_hours": round(post_wall_h, 2),
            "on_demand_usd": round(cost)}
    # Driver and object store: the driver holds the run's plan and markers, never rows (bench/scale.py measures
    # its RSS flat from 25k to 100k images); the object store holds blocks in flight: decoded caches are off at
    # this size (classifier.cache_decoded=auto caches only what fits in 25 % of it).
    out["sizing"] = {"driver": "the CPU head (8 vCPU, 32 GB): no row reaches it (bench/scale.py)",
                     "object_store": "30 % of each node's memory (Ray's default): blocks in flight only"}
    return out


def markdown(t: dict) -> str:
    rows = ["| config | GPU worker | GPU-hours (filter / classifier / attention / segmenter / finetune) | "
            "wall hours on 8 GPUs | ingest core-hours (wall on the CPU workers) | attention Eqn 9-10 core-hours "
            "(wall) | on-demand cost |",
            "|---|---|---|---:|---|---|---:|"]
    for name, c in t["configs"].items():
        s = c["gpu_hours_per_stage"]
        rows.append(f"| {name} | {c['gpu_worker']} ({c['gpu']}) | {c['gpu_hours']:.0f} ({s['filter']:.1f} / "
                    f"{s['classifier']:.1f} / {s['attention']:.1f} / {s['segmenter']:.1f} / {s['finetune']:.1f}) | "
                    f"{c['wall_hours_gpu_stages']:.1f} | {c['ingest_core_hours']:.0f} ({c['ingest_wall_hours']:.2f} h "
                    f"on {c['cpu_workers']}) | {t['attention_post_core_hours']:.0f} "
                    f"({c['attention_post_wall_hours']:.2f} h) | ${c['on_demand_usd']:,} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--images", type=int, default=1_000_000)
    ap.add_argument("--kept", type=float, default=0.68, help="share the filter keeps (the paper: 680k of 1M)")
    ap.add_argument("--gpus", type=int, default=8, help="GPU workers (the configs' max_workers)")
    ap.add_argument("--cpu-workers", type=int, default=16)
    ap.add_argument("--ingest-json", default="", help="a bench/ingest.py result (its loop part gives the rate)")
    ap.add_argument("--ingest-per-core", type=float, default=40.0, help="images/s per core when no JSON is given")
    ap.add_argument("--attention-json", default="", help="a bench/attention.py result (Eqn 9-10's CPU seconds)")
    ap.add_argument("--post-seconds", type=float, default=0.15,
                    help="Eqn 9-10 CPU seconds per 500 px photo when no attention JSON is given")
    args = ap.parse_args(argv)
    cfg = pipeline.load_config("paper", None, ["source=/crawl", "out=/tmp/inetseg-cost"])
    t = table(args, cfg)
    t["markdown"] = markdown(t)
    storage.write_json(args.out, t)
    print(t["markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
