"""Real-photo benchmark: the whole pipeline on a labelled folder-per-tag photo collection.

    python jobs/bench/real.py --source ../shared/data/real-dev --out jobs/bench/results/real.json
    python jobs/bench/real.py --source DIR --out F.json --distractors ../shared/data/camvid-train/images \\
        --distractors-per-tag 40 classifier.epochs=10

It holds out `--test-fraction` of each tag's photos that have a mask (by a hash of the file name) as
the test split, never trained on; trains on every other photo by its folder tag only (masks unread by
the pipeline); optionally adds off-topic photos to each tag folder as label noise (recorded, so the
filter can be scored). Then, on the same test split, side by side: the run's `miou` (CRF) and
`miou_no_crf`, per-class IoU, and the baselines `background_miou` (all background),
`centre_prior_miou` (a centred ellipse over 40 % of the image, labelled with the true tag) and
`oracle_miou` (the same segmenter trained on the training photos' true masks, no CRF). On the
training photos that have a mask: `pseudo_label_miou` (measurement only; nothing flows back).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np
import pyarrow as pa

from inetseg import audit, baselines, imaging, masks, metrics, pipeline, schema, shards, storage
from inetseg import config as C
from inetseg.registry import PipelineConfig
from inetseg.sources import tagged
from inetseg.stages import audit as truth_audit

log = logging.getLogger("inetseg")


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True, help="images/<tag>/, masks/, classes.json (e.g. ../shared/data/real-dev)")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--work", default="runs/real", help="folder for the split and the run (reused on re-run)")
    p.add_argument("--preset", default="real", help="pipeline preset (default: real)")
    p.add_argument("--config", help="YAML merged over the preset")
    p.add_argument("--test-fraction", type=float, default=0.2, help="share of each tag's masked photos held out")
    p.add_argument("--distractors", default="", help="a folder of off-topic photos mixed into the tag folders")
    p.add_argument("--distractors-per-tag", type=int, default=0)
    p.add_argument("--no-oracle", action="store_true", help="skip the segmenter trained on true masks")
    p.add_argument("--seeds", default="0", help="comma-separated run seeds: one whole run each, spread reported "
                                                "(the split stays; the oracle and baselines use the first run)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="pipeline keys, as for full_pipeline.py")
    return p.parse_args(argv)


def training_truth(split: tagged.Split, train_dir: str) -> dict[str, dict]:
    """Row id -> {'mask' PNG bytes} for masked training photos and {'noise'} for distractors (measurement only)."""
    from inetseg.ingest.listing import list_source, row_id

    listing, _ = list_source(train_dir, split.classes)
    by_name = {(it["tag"], os.path.basename(it["source"])): it["source"] for it in listing.to_pylist()}

    truth: dict[str, dict] = {}
    for tag, photos in split.train.items():
        for p in photos:
            src = by_name[(tag, os.path.basename(p))]
            mask = split.train_masks.get(p)
            truth[row_id(src)] = {"noise": None, "mask": open(mask, "rb").read() if mask else None}
    for tag, photos in split.distractors.items():
        for p in photos:
            truth[row_id(by_name[(tag, "distractor_" + os.path.basename(p))])] = {"noise": "wrong_tag", "mask": None}
    return truth


def centre_prior_miou(split: tagged.Split) -> dict:
    """The tag-given centre prior on the test split."""
    n = len(split.classes) + 1
    cm = np.zeros((n, n + 1), np.int64)
    for tag, _, mask in split.test:
        gt = masks.decode_mask(open(mask, "rb").read())
        cm += metrics.confusion_matrix(gt, baselines.centre_prior(*gt.shape, split.classes.index(tag) + 1), n)
    return metrics.summarize(cm, ["background", *split.classes])


def oracle(cfg: PipelineConfig, truth: dict[str, dict], work: str) -> dict:
    """The run's segmenter config trained on the masked training photos' true masks; test mIoU without CRF."""
    from inetseg.ingest.duplicates import usable_rows
    from inetseg.stages import evaluate, predict, segmenter

    pseudo = storage.join(work, "oracle", "pseudo")
    ids = [i for i, t in truth.items() if t["mask"] is not None]
    if not shards.is_complete(pseudo):
        t = usable_rows(cfg.ingest.out, ["id", "tag", "label", "image", "height", "width"])
        rows = {k: [] for k in schema.PSEUDO.names}
        wanted = set(ids)
        for r in t.to_pylist():
            if r["id"] not in wanted:
                continue
            gt = masks.decode_mask(truth[r["id"]]["mask"])
            gt = imaging.resize_labels(gt, r["height"], r["width"])
            for k in ("id", "tag", "label", "image", "height", "width"):
                rows[k].append(r[k])
            rows["mask"].append(imaging.encode_png(gt))
            rows["attention"].append(imaging.encode_png(np.zeros_like(gt)))
            rows["ignored"].append(float((gt == 255).mean()))
            rows["foreground"].append(float(((gt > 0) & (gt < 255)).mean()))
        shards.prepare(pseudo)
        shards.write_table(pa.Table.from_pydict(rows, schema=schema.PSEUDO), pseudo)
        shards.mark_complete(pseudo, "oracle", {"images": len(rows["id"])})
    seg = C.from_dict(C.SegmenterConfig, {**C.to_dict(cfg.segmenter), "pseudo": pseudo,
                                          "out": storage.join(work, "oracle", "segmenter")})
    segmenter.run(seg)
    pred = C.from_dict(C.PredictConfig, {**C.to_dict(cfg.predict), "model": seg.out,
                                         "out": storage.join(work, "oracle", "predictions")})
    predict.run(pred)
    ev = C.EvaluateConfig(predictions=pred.out, out=storage.join(work, "oracle", "eval"),
                          classes=list(cfg.ingest.classes))
    result = evaluate.run(ev)
    return {"miou": result["miou"], "per_class_iou": result["per_class_iou"],
            "images": shards.count_rows(pseudo)}


def write_json(path: str, data: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=2)


SEED_KEYS = ("miou", "miou_no_crf", "per_class_iou", "pseudo_label_miou", "pseudo_label_precision", "run_dir")


def run_seed(args: argparse.Namespace, split: tagged.Split, dirs: dict, truth: dict, work: str,
             seed: int) -> tuple[PipelineConfig, dict]:
    """One whole pipeline run with `seed` (its own folder) and its figures on the test split."""
    out = os.path.join(work, "run" if seed == 0 else f"run-seed{seed}")
    overrides = [f"source={dirs['train']}", f"test={dirs['test']}", f"out={out}", f"seed={seed}",
                 f"ingest.classes={','.join(split.classes)}", *args.overrides]
    cfg = pipeline.load_config(args.preset, args.config, overrides)
    summary = pipeline.run(cfg)
    pseudo_q = truth_audit.pseudo_label_quality(cfg.attention.out, {k: v for k, v in truth.items() if v["mask"]},
                                          split.classes)
    return cfg, {
        "miou": summary["miou"], "miou_no_crf": summary["miou_no_crf"],
        "per_class_iou": summary["per_class_iou"], "pixel_accuracy": summary["pixel_accuracy"],
        "pseudo_label_miou": pseudo_q["miou"], "pseudo_label_precision": pseudo_q["precision"],
        "pseudo_label_ignored": pseudo_q["ignored"], "pseudo_label_per_class_iou": pseudo_q["per_class_iou"],
        "pseudo_label_images_measured": pseudo_q["images"], "background_miou": summary["baseline_miou"],
        "counts": summary["counts"], "seconds": summary["seconds"], "run_dir": cfg.out,
    }


def main(argv: list[str]) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    t0 = time.time()
    work = os.path.abspath(args.work)
    split = tagged.plan_split(args.source, args.test_fraction, args.distractors, args.distractors_per_tag)
    dirs = tagged.layout(split, os.path.join(work, "data"))
    log.info("real bench: %d training photos (+%d distractors), %d test photos, classes %s",
             sum(map(len, split.train.values())), sum(map(len, split.distractors.values())), len(split.test),
             split.classes)
    seeds = [int(x) for x in args.seeds.split(",")]
    truth = training_truth(split, dirs["train"])
    centre = centre_prior_miou(split)["miou"]
    runs: list[tuple[PipelineConfig, dict]] = []
    for seed in seeds:  # the JSON is rewritten after every run: a long multi-seed bench keeps what it measured
        runs.append(run_seed(args, split, dirs, truth, work, seed))
        cfg, first = runs[0]
        result = {
            "source": os.path.abspath(args.source), "preset": args.preset, "overrides": args.overrides,
            "test_images": len(split.test), "train_images": sum(map(len, split.train.values())),
            "distractors": sum(map(len, split.distractors.values())), **first, "centre_prior_miou": centre,
            "seeds": [{"seed": s, **{k: r[k] for k in SEED_KEYS}} for s, (_, r) in zip(seeds, runs)],
            "complete": False,
        }
        for key in ("miou", "miou_no_crf", "pseudo_label_miou"):
            values = [r[key] for _, r in runs]
            result[f"{key}_over_seeds"] = {"mean": float(np.mean(values)), "min": min(values), "max": max(values)}
        write_json(args.out, result)
    if split.distractors:
        result["filter_quality"] = audit.filter_quality(cfg.filter.images, cfg.split.images or cfg.classifier.images,
                                                         truth)
    if not args.no_oracle:
        t1 = time.time()
        orc = oracle(cfg, truth, work)
        result.update({"oracle_miou": orc["miou"], "oracle_per_class_iou": orc["per_class_iou"],
                       "oracle_train_images": orc["images"], "oracle_seconds": round(time.time() - t1, 1)})
    result["total_seconds"] = round(time.time() - t0, 1)
    result["complete"] = True
    write_json(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if "miou" in k}, indent=2))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except (FileNotFoundError, C.ConfigError) as e:  # a user mistake: one line, no traceback
        print(f"real.py: error: {e}", file=sys.stderr)
        sys.exit(2)
