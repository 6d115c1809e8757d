"""Pseudo-label quality of attention settings on the masked TRAINING photos of a real-photo bench run.

    python jobs/bench/real_attention.py --work runs/real --out jobs/bench/results/real-attention.json
    python jobs/bench/real_attention.py --work runs/real --space 24 --out F.json   # does `inetseg tune` see it?

With --space N: N settings of the attention keys drawn from `inetseg tune`'s default space (seeded), each
scored twice: by the masks (pseudo-label mIoU) and by the label-free objective the tune's attention rung
uses (tuning.evidence_score: P(tag | I.M) - P(tag | I.(1-M)) - w |M|/|I|, M the pseudo label's object pixels), and
the rank correlation of the two (and of each term alone) over the N settings: many more settings than a search's
dozen trials, at a minute each, for thresholds that act before the segmenter.

Uses the run's own classifier (`<work>/run/classifier`) and `<work>/data/split.json` (written by
jobs/bench/real.py). The masks measure only: this is where the real preset's attention settings were
chosen, so that the test split stays unseen. Runs on the driver, no Ray: a few minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np
import torch

from inetseg import imaging, masks, metrics, tuning
from inetseg.attention.maps import Method, attention_maps, pseudo_label
from inetseg.config.tuning import DEFAULT_SPACE
from inetseg.inference import region_evidence
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


def load(items: list[tuple[str, str, int]], max_side: int) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """Each (photo, mask, label) decoded once: the photo at the run's ingest size, the mask at its own."""
    return [(imaging.resize_max_side(imaging.decode_rgb(open(photo, "rb").read()), max_side),
             masks.decode_mask(open(mask, "rb").read(), mask), lab) for photo, mask, lab in items]


def measure(model: torch.nn.Module, photos: list[tuple[np.ndarray, np.ndarray, int]], method: Method,
            input_size: int, classes: list[str], classifier_input: int = 0) -> dict:
    """mIoU / precision / ignored share of the pseudo labels of `photos` (image, mask, label; see load) against
    their masks; with classifier_input, also the label-free objective's terms (inference.region_evidence, the
    pseudo label's object pixels as M: ignored ones are not claimed) averaged over the photos."""
    n = len(classes) + 1
    cm = np.zeros((n, n + 1), np.int64)
    labelled = correct = total = 0
    terms: list[dict] = []
    cpu = torch.device("cpu")
    for i in range(0, len(photos), 16):
        chunk = photos[i:i + 16]
        images = [im for im, _, _ in chunk]
        labels = np.array([lab for _, _, lab in chunk])
        maps = attention_maps(model, images, labels, input_size, cpu, method)
        pseudos = [pseudo_label(att, image, int(lab), method)[0] for image, att, lab in zip(images, maps, labels)]
        if classifier_input:
            terms.append(region_evidence(model, images, [p == lab for p, lab in zip(pseudos, labels)], labels,
                                         classifier_input, cpu))
        for (_, gt, _), pseudo in zip(chunk, pseudos):
            pseudo = imaging.resize_labels(pseudo, *gt.shape)
            cm += metrics.confusion_matrix(gt, pseudo, n)
            valid = pseudo != 255
            labelled, total = labelled + int(valid.sum()), total + pseudo.size
            correct += int((pseudo[valid] == gt[valid]).sum())
    s = metrics.summarize(cm, ["background", *classes])
    got = {"miou": s["miou"], "per_class_iou": s["per_class_iou"], "precision": correct / max(1, labelled),
           "ignored": 1 - labelled / max(1, total)}
    if terms:
        t = {k: np.concatenate([c[k] for c in terms]) for k in ("p_in", "p_out", "area")}
        got.update(objective=tuning.evidence_score(t["p_in"], t["p_out"], t["area"]),
                   **{k: float(v.mean()) for k, v in t.items()})
    return got


def sample_space(n: int, seed: int) -> dict[str, dict]:
    """n settings of the attention keys of `inetseg tune`'s default space, drawn uniformly (log-uniformly where the
    space says so); the first is the preset's own (Method's defaults)."""
    rng = np.random.default_rng(seed)
    space = {k.split(".", 1)[1]: v for k, v in DEFAULT_SPACE.items() if k.startswith("attention.")}
    out: dict[str, dict] = {"default": {}}
    while len(out) < n:
        fields = {}
        for key, dist in space.items():
            (kind, (low, high)), = dist.items()
            fields[key] = float(np.exp(rng.uniform(np.log(low), np.log(high))) if kind == "loguniform"
                                else rng.uniform(low, high))
        if fields.get("delta_background", 0) <= fields.get("delta_object", 1):  # the pipeline refuses the rest
            out[f"sample {len(out)}"] = fields
    return out


def agreement(variants: dict) -> dict:
    """Spearman over the settings of the objective (and of each term) with the pseudo labels' mIoU."""
    rows = [v for v in variants.values() if "objective" in v]
    truth = [v["miou"] for v in rows]
    return {k: tuning.spearman([v[k] for v in rows], truth) for k in ("objective", "p_in", "p_out", "area")}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True, help="a jobs/bench/real.py --work folder (data/split.json, run/)")
    p.add_argument("--out", required=True)
    p.add_argument("--max-side", type=int, default=128, help="photo size as the run ingested it")
    p.add_argument("--input-size", type=int, default=256, help="attention input side, as the run used")
    p.add_argument("--classifier", default="", help="classifier folder (default: <work>/run/classifier)")
    p.add_argument("--space", type=int, default=0, metavar="N",
                   help="N settings drawn from the tune's default attention space, each also scored label-free")
    p.add_argument("--seed", type=int, default=0, help="--space: the draw's seed")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=JSON",
                   help='a setting of your own instead of the built-in list, e.g. \'big segments={"trimap": false, '
                        '"objectness": 1, "segment_scale": 400}\' (Method\'s fields; repeatable)')
    p.add_argument("--objectness", type=float, default=1.0, help="--space: the prior's weight (the real preset's)")
    args = p.parse_args(argv)
    split = json.load(open(os.path.join(args.work, "data", "split.json")))
    classes = split["classes"]
    items = [(photo, mask, classes.index(os.path.basename(os.path.dirname(photo))) + 1)
             for photo, mask in sorted(split["train_masks"].items())]
    torch.set_num_threads(os.cpu_count() or 1)
    model, meta = load_model(args.classifier or os.path.join(args.work, "run", "classifier"), torch.device("cpu"),
                             "classifier")
    result = {"work": os.path.abspath(args.work), "photos": len(items), "max_side": args.max_side,
              "input_size": args.input_size, "variants": {}}
    variants = VARIANTS
    if args.variant:
        try:
            variants = {name: json.loads(fields) for name, fields in (v.split("=", 1) for v in args.variant)}
        except ValueError as e:
            p.error(f"--variant must be NAME=JSON (a Method's fields): {e}")
        known = {f.name for f in dataclasses.fields(Method)}
        for name, fields in variants.items():
            if not isinstance(fields, dict):
                p.error(f"--variant {name}: JSON must be an object of Method fields, got {fields!r}")
            unknown = sorted(set(fields) - known)
            if unknown:
                p.error(f"--variant {name}: not Method fields: {unknown} (known: {', '.join(sorted(known))})")
    if args.space:
        variants = {k: {**v, "objectness": args.objectness} for k, v in sample_space(args.space, args.seed).items()}
        result.update(space=args.space, seed=args.seed, objectness=args.objectness)
    photos = load(items, args.max_side)  # once, not once per setting
    for name, fields in variants.items():
        t0 = time.time()
        got = measure(model, photos, Method(**fields), args.input_size, classes,
                      int(meta["input_size"]) if args.space else 0)
        result["variants"][name] = {**got, "settings": fields, "seconds": round(time.time() - t0, 1)}
        print(f"{name:<40} mIoU {100 * got['miou']:5.1f} %" +
              (f"  objective {got['objective']:+.3f}" if "objective" in got else ""), flush=True)
        if args.space:  # written as it goes: a long draw stopped early keeps what it measured
            result["spearman_vs_pseudo_miou"] = agreement(result["variants"])
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    if args.space:
        rho = result["spearman_vs_pseudo_miou"]
        print("spearman with pseudo-label mIoU:", {k: round(v, 2) for k, v in rho.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
