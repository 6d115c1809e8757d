"""Pseudo-label quality of attention settings on the masked TRAINING photos of a real-photo bench run.

    python jobs/bench/real_attention.py --work runs/real --out jobs/bench/results/real-attention.json

Uses the run's own classifier (`<work>/run/classifier`) and `<work>/data/split.json` (written by
jobs/bench/real.py). The masks measure only: this is where the real preset's attention settings were
chosen, so that the test split stays unseen. Runs on the driver, no Ray: a few minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np
import torch

from inetseg import imaging, masks, metrics
from inetseg.attention.maps import Method, attention_maps, pseudo_label
from inetseg.models.io import load_model

# name -> Method fields; "objectness alone" weighs the prior 1000:1 against the attention.
VARIANTS = {
    "paper (fused, smoothing, trimap)": {},
    "forward CAM only": {"maps": "forward"},
    "+ objectness (weight 1, real preset)": {"objectness": 1.0},
    "objectness alone (weight 1000)": {"objectness": 1000.0},
    # Table 1's smoothing step (fused -> + Eqn 9, one cut) with and without the prior: does the prior, computed
    # over the same segments, leave smoothing nothing to add?
    "fused, one cut": {"smoothing": False, "trimap": False},
    "fused + smoothing, one cut": {"trimap": False},
    "fused + objectness, one cut": {"smoothing": False, "trimap": False, "objectness": 1.0},
    "fused + objectness + smoothing, one cut": {"trimap": False, "objectness": 1.0},
}


def measure(model: torch.nn.Module, items: list[tuple[str, str, int]], method: Method, max_side: int,
            input_size: int, classes: list[str]) -> dict:
    """mIoU / precision / ignored share of the pseudo labels of `items` (photo, mask, label) against their masks."""
    n = len(classes) + 1
    cm = np.zeros((n, n + 1), np.int64)
    labelled = correct = total = 0
    for i in range(0, len(items), 16):
        chunk = items[i:i + 16]
        images = [imaging.resize_max_side(imaging.decode_rgb(open(p, "rb").read()), max_side) for p, _, _ in chunk]
        labels = np.array([lab for _, _, lab in chunk])
        maps = attention_maps(model, images, labels, input_size, torch.device("cpu"), method)
        for (_, mask_path, lab), image, att in zip(chunk, images, maps):
            pseudo, _ = pseudo_label(att, image, int(lab), method)
            gt = masks.decode_mask(open(mask_path, "rb").read(), mask_path)
            pseudo = imaging.resize_labels(pseudo, *gt.shape)
            cm += metrics.confusion_matrix(gt, pseudo, n)
            valid = pseudo != 255
            labelled, total = labelled + int(valid.sum()), total + pseudo.size
            correct += int((pseudo[valid] == gt[valid]).sum())
    s = metrics.summarize(cm, ["background", *classes])
    return {"miou": s["miou"], "per_class_iou": s["per_class_iou"], "precision": correct / max(1, labelled),
            "ignored": 1 - labelled / max(1, total)}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True, help="a jobs/bench/real.py --work folder (data/split.json, run/)")
    p.add_argument("--out", required=True)
    p.add_argument("--max-side", type=int, default=128, help="photo size as the run ingested it")
    p.add_argument("--input-size", type=int, default=256, help="attention input side, as the run used")
    args = p.parse_args(argv)
    split = json.load(open(os.path.join(args.work, "data", "split.json")))
    classes = split["classes"]
    items = [(photo, mask, classes.index(os.path.basename(os.path.dirname(photo))) + 1)
             for photo, mask in sorted(split["train_masks"].items())]
    torch.set_num_threads(os.cpu_count() or 1)
    model, _ = load_model(os.path.join(args.work, "run", "classifier"), torch.device("cpu"), "classifier")
    result = {"work": os.path.abspath(args.work), "photos": len(items), "max_side": args.max_side,
              "input_size": args.input_size, "variants": {}}
    for name, fields in VARIANTS.items():
        t0 = time.time()
        result["variants"][name] = {**measure(model, items, Method(**fields), args.max_side, args.input_size,
                                              classes), "settings": fields, "seconds": round(time.time() - t0, 1)}
        print(f"{name:<40} mIoU {100 * result['variants'][name]['miou']:5.1f} %", flush=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
