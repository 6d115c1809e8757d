"""Are Eqn 9's segments the reason segment smoothing does not help on real photos? Segment quality, measured.

    python jobs/bench/segments.py --source ../shared/data/real-dev --out jobs/bench/results/segments-real.json

The paper smooths attention over segments made from an unsupervised edge detector by an edge-to-segment converter
(its [14] and [24]); inetseg uses Felzenszwalb-Huttenlocher graph segments (inetseg/attention/smoothing.py). This
scores segmentations of the masked photos by their achievable segmentation accuracy (ASA: the share of labelled
pixels that would be right if every segment took its majority class; 1.0 = no segment straddles an object
boundary) against their number of segments, for Felzenszwalb at several scales and for the closest edge-based
hierarchy that can be built here without learned edges: Sobel edges of the blurred Lab image, watershed
superpixels, and their boundary graph merged while the weakest boundary's mean edge strength is below a threshold
(an ultrametric contour map cut at one level). Photos at the pipeline's ingest size (--max-side). The masks only
measure; nothing here is a pipeline setting.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np

from inetseg import imaging, masks
from inetseg.attention import smoothing


def edge_strength(rgb: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Gradient magnitude of the blurred Lab image (channels scaled to comparable ranges), 1.0 at its 99th pct."""
    from skimage import color, filters

    lab = color.rgb2lab(filters.gaussian(rgb, sigma=sigma, channel_axis=-1))
    e = np.sqrt(sum(filters.sobel(lab[..., c] / (100.0 if c == 0 else 60.0)) ** 2 for c in range(3)))
    return e / max(float(np.percentile(e, 99)), 1e-6)


def _boundary_weight(g, src: int, dst: int, n: int) -> dict:
    """Merging two regions: the boundary to a neighbour is the length-weighted mean of both boundaries."""
    a, b = g[src].get(n, {"weight": 0.0, "count": 0}), g[dst].get(n, {"weight": 0.0, "count": 0})
    count = a["count"] + b["count"]
    return {"count": count, "weight": (a["count"] * a["weight"] + b["count"] * b["weight"]) / max(count, 1)}


def edge_hierarchy(rgb: np.ndarray, threshold: float) -> np.ndarray:
    """Watershed superpixels of the edge map, merged across boundaries weaker than `threshold` (UCM at one level)."""
    from skimage import graph, segmentation

    e = edge_strength(rgb)
    sp = segmentation.watershed(e)  # a basin per local minimum
    rag = graph.rag_boundary(sp, e)
    merged = graph.merge_hierarchical(sp, rag, thresh=threshold, rag_copy=False, in_place_merge=True,
                                      merge_func=lambda g, s, d: None, weight_func=_boundary_weight)
    return segmentation.relabel_sequential(merged)[0]


def asa(seg: np.ndarray, gt: np.ndarray) -> float:
    """Achievable segmentation accuracy of `seg` against label map `gt` (255 = ignore)."""
    valid = gt != 255
    s, g = seg[valid].astype(np.int64), gt[valid].astype(np.int64)
    counts = np.zeros((int(s.max()) + 1, 256), np.int64)
    np.add.at(counts, (s, g), 1)
    return float(counts.max(1).sum() / max(1, valid.sum()))


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True, help="a labelled folder: images/<tag>/, masks/<name>.png")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--photos", type=int, default=200, help="masked photos scored (a seeded draw)")
    p.add_argument("--max-side", type=int, default=128, help="photo size, as the pipeline ingests it")
    p.add_argument("--scales", default="30,100,300,1000", help="Felzenszwalb scales (100: the presets')")
    p.add_argument("--thresholds", default="0.1,0.2,0.3,0.5,0.8", help="edge hierarchy cuts")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    mask_dir = os.path.join(args.source, "masks")
    if not os.path.isdir(mask_dir):
        p.error(f"{mask_dir}: no masks/ folder (this bench needs a labelled folder)")
    names = {os.path.splitext(f)[0] for f in os.listdir(mask_dir) if f.endswith(".png")}
    pairs = sorted((os.path.join(root, f), os.path.join(mask_dir, os.path.splitext(f)[0] + ".png"))
                   for root, _, files in os.walk(os.path.join(args.source, "images")) for f in files
                   if os.path.splitext(f)[0] in names)
    rng = np.random.default_rng(args.seed)
    pairs = [pairs[i] for i in sorted(rng.choice(len(pairs), min(args.photos, len(pairs)), replace=False))]
    data = []
    for photo, mask in pairs:
        rgb = imaging.resize_max_side(imaging.decode_rgb(open(photo, "rb").read()), args.max_side)
        gt = imaging.resize_labels(masks.decode_mask(open(mask, "rb").read(), mask), *rgb.shape[:2])
        data.append((rgb, gt))
    methods = {f"felzenszwalb scale {s}": (lambda r, s=float(s): smoothing.segments(r, s))
               for s in args.scales.split(",")}
    methods.update({f"edge hierarchy {t}": (lambda r, t=float(t): edge_hierarchy(r, t))
                    for t in args.thresholds.split(",")})
    result = {"source": os.path.abspath(args.source), "photos": len(data), "max_side": args.max_side,
              "seed": args.seed, "methods": {}}
    for name, fn in methods.items():
        t0 = time.perf_counter()
        scores, counts = [], []
        for rgb, gt in data:
            seg = fn(rgb)
            scores.append(asa(seg, gt))
            counts.append(int(seg.max()) + 1)
        ms = 1000 * (time.perf_counter() - t0) / len(data)
        result["methods"][name] = {"asa": float(np.mean(scores)), "segments": float(np.mean(counts)),
                                   "ms_per_photo": round(ms, 1)}
        print(f"{name:<28} ASA {np.mean(scores):.4f}  segments {np.mean(counts):6.1f}  {ms:6.1f} ms/photo", flush=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
