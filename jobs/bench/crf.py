"""Dense CRF benchmark: mIoU with and without the CRF over a grid of CRF settings, on data it never trains on;
with --source, the speed of the CRF stage's pool against a bare loop instead (jobs/bench/crf_pool.py).

    python jobs/bench/crf.py --camvid ../shared/data/camvid-train --warp 0,8 \\
        --predictions runs/demo/predictions --predictions real=runs/real/run/predictions --out F.json
    python jobs/bench/crf.py --source ../shared/data/camvid-train --out F.json [--images 120 --repeats 3]

Data sets (images shrunk to `--max-side`):

- `--camvid DIR`: real street photos (images/, masks/ with 0..10 = classes, 11 = void), `--images` of
  them picked by a hash of the file name. No segmenter has seen them; the unaries are coarse, noisy,
  confident probabilities made from the true masks the way a stride-8 segmenter errs (`coarse_probs`:
  boundaries blurred over a few output cells, thin things averaged away, whole cells leaning to a wrong
  class). `--warp 0,8` adds a second CamVid set whose masks first wander by a smooth random field of
  8 px std (`wander`: boundaries off the image's edges, the error a CRF exists to fix). Void: uniform
  unaries, not scored.
- `--predictions [NAME=]DIR` (repeatable): a finished run's PREDICTIONS table: the stored float16 softmax
  is the unary, as in the crf stage; `gt` is read only to score. Its test images were never trained on
  (e.g. the synthetic demo's test split, or real-dev's held-out photos in a jobs/bench/real.py run).

Each data set is split in two halves by a hash of the row id: every setting is scored on both, the setting
is CHOSEN on the `choose` half only (highest of the smallest gain over the data sets, then mean gain) and
the figures to quote are the `report` half's. Per setting and half: miou_no_crf, miou_crf, delta (and
pixel accuracy), seconds.
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import hashlib
import json
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import cv2
import numpy as np
import pyarrow.parquet as pq

from inetseg import imaging, masks, metrics, schema, shards
from inetseg.config import CRFParams
from inetseg.crf import crf_labels

log = logging.getLogger("inetseg")

CAMVID_CLASSES = 11  # 0 Sky .. 10 Bicyclist; 11 = void
CAMVID_VOID = 11

# The grid: the defaults before this bench (DeepLab-like, pydensecrf's README colour width), a weak setting,
# DeepLab v2's VOC setting (deeplab-pytorch's voc12.yaml), and steps that turn each kernel down or off, narrow
# its colour or spatial range.
BEFORE = {"iterations": 10, "gaussian_sxy": 3.0, "gaussian_compat": 3.0, "bilateral_sxy": 50.0,
          "bilateral_srgb": 13.0, "bilateral_compat": 4.0, "reference_side": 500}
SETTINGS: dict[str, dict] = {
    "defaults_before": BEFORE,
    "weak": {**BEFORE, "iterations": 5, "gaussian_compat": 1.0, "bilateral_compat": 1.0},
    "deeplab_v2": {**BEFORE, "gaussian_sxy": 1.0, "bilateral_sxy": 67.0, "bilateral_srgb": 3.0},
    "few_iterations": {**BEFORE, "iterations": 2},
    "narrow_colour": {**BEFORE, "bilateral_srgb": 5.0},
    "gaussian_only": {**BEFORE, "bilateral_compat": 0.0},
    "gaussian_only_weak": {**BEFORE, "gaussian_compat": 1.0, "bilateral_compat": 0.0},
    "bilateral_only_weak": {**BEFORE, "gaussian_compat": 0.0, "bilateral_compat": 1.0},
    "bilateral_only_narrow_colour": {**BEFORE, "gaussian_compat": 0.0, "bilateral_compat": 1.0,
                                     "bilateral_srgb": 5.0},
    "bilateral_only_short_range": {**BEFORE, "gaussian_compat": 0.0, "bilateral_compat": 2.0,
                                   "bilateral_sxy": 20.0, "bilateral_srgb": 5.0},
}


def grid(names: str) -> dict[str, dict]:
    """The named settings (all when empty), plus today's CRFParams() when it is none of them."""
    chosen = {k: SETTINGS[k] for k in names.split(",")} if names else dict(SETTINGS)
    current = dataclasses.asdict(CRFParams())
    if current not in chosen.values():
        chosen["current_defaults"] = current
    return chosen


def half(row_id: str) -> str:
    """'choose' or 'report', by a hash of the id: stable across runs and subsamples."""
    return "choose" if int(hashlib.sha1(row_id.encode()).hexdigest()[:8], 16) % 2 == 0 else "report"


def subsample(ids: list[str], n: int) -> set[str]:
    """n ids picked by hash order (0 = all)."""
    ranked = sorted(ids, key=lambda i: hashlib.sha1(("pick:" + i).encode()).hexdigest())
    return set(ranked[:n] if n > 0 else ranked)


def coarse_probs(mask: np.ndarray, n: int, rng: np.random.Generator, stride: int = 8, blur: float = 1.0,
                 noise: float = 0.6, temperature: float = 0.3) -> np.ndarray:
    """n x H x W float32 probabilities a segmenter with output stride `stride` might give for `mask`.

    1. one-hot of the mask (ids >= n, i.e. void: uniform);
    2. area-averaged to H/stride x W/stride cells (thin things such as poles fade);
    3. Gaussian blur of `blur` cells (soft boundaries);
    4. mixed with a Dirichlet(1) draw per cell, weight `noise` (cells leaning to a wrong class);
    5. log(max(p, 1e-6)) / `temperature` as the cells' logits: a trained net is confident (noise 0.6 and
       temperature 0.3 give the demo segmenter's spread of top probabilities: 10/25/50 % quantiles
       0.68/0.93/0.98 here, 0.76/0.91/0.98 in runs/demo-base), chosen before any CRF was run on them;
    6. logits bilinear back to H x W, softmax (what inetseg.inference does with the network's logits).
    """
    h, w = mask.shape
    onehot = np.full((h, w, n), 1.0 / n, np.float32)
    known = mask < n
    onehot[known] = np.eye(n, dtype=np.float32)[mask[known]]
    lh, lw = max(1, round(h / stride)), max(1, round(w / stride))
    low = cv2.resize(onehot, (lw, lh), interpolation=cv2.INTER_AREA).reshape(lh, lw, n)
    if blur > 0:
        low = cv2.GaussianBlur(low, (0, 0), blur, borderType=cv2.BORDER_REFLECT).reshape(lh, lw, n)
    low = (1 - noise) * low + noise * rng.dirichlet(np.ones(n), size=(lh, lw)).astype(np.float32)
    logits = np.log(np.maximum(low, 1e-6)) / temperature
    full = cv2.resize(logits, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, n)
    full = np.exp(full - full.max(2, keepdims=True))
    full /= full.sum(2, keepdims=True)
    return np.ascontiguousarray(full.transpose(2, 0, 1), dtype=np.float32)


def shrink(image: np.ndarray, probs: np.ndarray, gt: np.ndarray, max_side: int):
    """The image, probs and gt with the longer side at most max_side (area / bilinear / nearest)."""
    h, w = gt.shape
    if max(h, w) <= max_side:
        return image, probs, gt
    image = imaging.resize_max_side(image, max_side)
    nh, nw = image.shape[:2]
    p = cv2.resize(probs.transpose(1, 2, 0), (nw, nh), interpolation=cv2.INTER_LINEAR).reshape(nh, nw, -1)
    p = np.ascontiguousarray((p / p.sum(2, keepdims=True)).transpose(2, 0, 1))
    return image, p, imaging.resize_labels(gt, nh, nw)


def wander(mask: np.ndarray, px: float, rng: np.random.Generator, cell: int = 32) -> np.ndarray:
    """The mask displaced by a smooth random field (std `px` pixels, correlated over ~`cell` pixels): a
    segmenter's boundaries wander off the image's edges by a few pixels, which is what a CRF can fix."""
    h, w = mask.shape
    d = [cv2.resize(rng.normal(0, px, (h // cell + 2, w // cell + 2)).astype(np.float32), (w, h),
                    interpolation=cv2.INTER_CUBIC) for _ in range(2)]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return cv2.remap(mask, xx + d[0], yy + d[1], cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT)


def load_camvid(root: str, n: int, max_side: int, unaries: dict) -> dict:
    """CamVid photos with coarse_probs unaries (after `wander` when unaries['warp_px'] > 0); void unscored."""
    names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(root, "masks", "*.png")))
    if not names:
        raise FileNotFoundError(f"no masks/*.png under {root}")
    keep = subsample(names, n)
    warp, kw = unaries["warp_px"], {k: v for k, v in unaries.items() if k != "warp_px"}
    items = []
    for name in names:
        if name not in keep:
            continue
        image = imaging.decode_rgb(open(os.path.join(root, "images", name), "rb").read())
        mask = masks.decode_mask(open(os.path.join(root, "masks", name), "rb").read(), name)
        rng = np.random.default_rng(int(hashlib.sha1(name.encode()).hexdigest()[:8], 16))
        seen = wander(mask, warp, rng) if warp > 0 else mask
        probs = coarse_probs(seen, CAMVID_CLASSES, rng, **kw)
        gt = np.where(mask == CAMVID_VOID, schema.IGNORE, mask).astype(np.uint8)
        items.append((name, *shrink(image, probs, gt, max_side)))
    return {"name": "camvid" + (f"-warp{warp:g}" if warp > 0 else ""), "source": os.path.abspath(root),
            "classes": CAMVID_CLASSES, "items": items, "unaries": {"how": "coarse_probs", **unaries}}


def load_predictions(spec: str, n: int, max_side: int) -> dict:
    """A PREDICTIONS table (`DIR` or `NAME=DIR`; the name defaults to the run folder's) with its stored probs."""
    name, _, folder = spec.rpartition("=")
    folder = os.path.abspath(folder)
    shards.require(folder, "predictions")
    files = sorted(glob.glob(os.path.join(folder, "*.parquet")))
    ids = [i for f in files for i in pq.read_table(f, columns=["id"]).column("id").to_pylist()]
    keep = subsample(ids, n)
    items, classes = [], 0
    for f in files:
        for r in pq.read_table(f, columns=["id", "image", "gt", "probs"]).to_pylist():
            if r["id"] not in keep or r["gt"] is None or r["probs"] is None:
                continue
            probs = schema.decode_probs(r["probs"]).astype(np.float32)  # what the crf stage decodes
            classes = probs.shape[0]
            image, gt = imaging.decode_rgb(r["image"]), masks.decode_mask(r["gt"])
            items.append((r["id"], *shrink(image, probs, gt, max_side)))
    return {"name": name or os.path.basename(os.path.dirname(folder)), "source": folder, "classes": classes,
            "items": items, "unaries": {"how": "the run's stored float16 softmax"}}


def score(items: list, n: int, params: CRFParams | None) -> tuple[float, float, float]:
    """(mIoU, pixel accuracy, seconds) of argmax (params None) or of the CRF's labels over items."""
    cm = np.zeros((n, n + 1), np.int64)
    t0 = time.time()
    for _, image, probs, gt in items:
        pred = probs.argmax(0).astype(np.uint8) if params is None else crf_labels(image, probs, params)
        cm += metrics.confusion_matrix(gt, pred, n)
    return metrics.miou(cm), metrics.pixel_accuracy(cm), time.time() - t0


def bench_set(data: dict, settings: dict[str, dict]) -> dict:
    """Every setting on both halves of one data set."""
    halves = {h: [it for it in data["items"] if half(it[0]) == h] for h in ("choose", "report")}
    out: dict = {"source": data["source"], "classes": data["classes"], "unaries": data["unaries"],
                 "images": {h: len(v) for h, v in halves.items()}, "settings": {}}
    base = {h: score(v, data["classes"], None) for h, v in halves.items()}
    for name, kw in settings.items():
        res = {}
        for h, items in halves.items():
            m, acc, sec = score(items, data["classes"], CRFParams(**kw))
            res[h] = {"miou_no_crf": round(base[h][0], 4), "miou_crf": round(m, 4), "delta": round(m - base[h][0], 4),
                      "pixel_acc_no_crf": round(base[h][1], 4), "pixel_acc_crf": round(acc, 4),
                      "seconds": round(sec, 1)}
        log.info("%s %s: %s", data["name"], name, res)
        out["settings"][name] = res
    return out


def choose(sets: dict[str, dict], settings: dict[str, dict]) -> dict:
    """The setting with the best smallest choose-half gain over the data sets, and its report-half figures."""
    def key(name: str) -> tuple[float, float]:
        d = [s["settings"][name]["choose"]["delta"] for s in sets.values()]
        return min(d), float(np.mean(d))

    best = max(settings, key=key)
    report = {k: s["settings"][best]["report"] for k, s in sets.items()}
    per_set = {}
    for k, s in sets.items():  # what tuning on each data set alone would pick (for comparison only)
        b = max(settings, key=lambda n, s=s: s["settings"][n]["choose"]["delta"])
        per_set[k] = {"setting": b, "choose": s["settings"][b]["choose"], "report": s["settings"][b]["report"]}
    return {"rule": "max over settings of (min, mean) of the choose-half delta over the data sets",
            "setting": best, "params": settings[best], "choose_deltas": dict(zip(("min", "mean"), key(best))),
            "report": report, "helps_on_every_report_half": all(r["delta"] > 0 for r in report.values()),
            "best_per_data_set": per_set}


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--camvid", default="", help="CamVid folder: images/, masks/ (e.g. ../shared/data/camvid-train)")
    p.add_argument("--predictions", action="append", default=[],
                   help="a run's predictions folder, or NAME=DIR (repeatable)")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--images", type=int, default=100, help="CamVid photos, picked by hash (0 = all 367)")
    p.add_argument("--pred-images", type=int, default=0, help="rows per predictions table, by hash (0 = all)")
    p.add_argument("--max-side", type=int, default=500, help="longer side of every image at most this")
    p.add_argument("--warp", default="0", help="CamVid: comma-separated boundary wander (px), one data set each")
    p.add_argument("--noise", type=float, default=0.6, help="CamVid unaries: weight of the per-cell Dirichlet noise")
    p.add_argument("--temperature", type=float, default=0.3, help="CamVid unaries: logits = log(p) / this")
    p.add_argument("--blur", type=float, default=1.0, help="CamVid unaries: Gaussian blur in output cells")
    p.add_argument("--stride", type=int, default=8, help="CamVid unaries: output stride of the imitated segmenter")
    p.add_argument("--settings", default="", help="comma-separated subset of the grid (default: all)")
    speed = p.add_argument_group("speed (--source): the crf stage's pool against a bare single-process loop")
    speed.add_argument("--source", default="", help="CamVid-like folder (images/, masks/): time the pool on it")
    speed.add_argument("--workers", type=int, default=0, help="CRF tasks at once (0: every core)")
    speed.add_argument("--batch", type=int, default=8, help="photos per task (crf.compute.inference_batch_size)")
    speed.add_argument("--repeats", type=int, default=3, help="timed runs of each side, interleaved")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.source:
        from jobs.bench import crf_pool

        if not os.path.isdir(os.path.join(args.source, "images")) or not os.path.isdir(os.path.join(args.source,
                                                                                                     "masks")):
            raise FileNotFoundError(f"--source {args.source}: needs images/ and masks/ (e.g. camvid-train)")

        def coarse(mask, n, rng):
            return coarse_probs(mask, n, rng, stride=args.stride, blur=args.blur, noise=args.noise,
                                temperature=args.temperature)
        return crf_pool.main(args, coarse, CAMVID_CLASSES, CAMVID_VOID)
    if not args.camvid and not args.predictions:
        raise FileNotFoundError("give --camvid and/or --predictions (quality) or --source (speed)")
    settings = grid(args.settings)
    t0 = time.time()
    loaded = []
    for warp in ([float(x) for x in args.warp.split(",")] if args.camvid else []):
        unaries = {"stride": args.stride, "blur": args.blur, "noise": args.noise,
                   "temperature": args.temperature, "warp_px": warp}
        loaded.append(load_camvid(args.camvid, args.images, args.max_side, unaries))
    loaded += [load_predictions(f, args.pred_images, args.max_side) for f in args.predictions]
    sets = {d["name"]: bench_set(d, settings) for d in loaded}
    result = {"command": " ".join(["python", "jobs/bench/crf.py", *argv]), "max_side": args.max_side,
              "split": "sha1(id) % 2: settings chosen on 'choose', quoted on 'report'",
              "data_sets": sets, "chosen": choose(sets, settings), "total_seconds": round(time.time() - t0, 1)}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result["chosen"], indent=2))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except FileNotFoundError as e:  # a user mistake: one line, no traceback
        print(f"crf.py: error: {e}", file=sys.stderr)
        sys.exit(2)
