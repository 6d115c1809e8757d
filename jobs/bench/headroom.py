"""Headroom of the synthetic corpus: the pipeline's mIoU against a segmenter trained on the GT masks.

    python jobs/bench/headroom.py --run runs/demo --out headroom.json

Takes a finished pipeline run (same `out`), trains the same segmenter with the same settings on the
corpus's hidden ground-truth masks instead of pseudo labels (an oracle no real run can have), and
scores both on the same test split. A useful benchmark corpus keeps the CAM-based pipeline far below
the oracle. This reads the hidden sidecar on purpose: it is a measurement, not part of the pipeline.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import pyarrow as pa
import pyarrow.parquet as pq

from inetseg import config as C
from inetseg import imaging, masks, schema, shards, storage


def oracle_table(corpus: str, classes: list[str], out: str) -> int:
    """PSEUDO-schema shards whose masks are the hidden GT of every image that shows an object."""
    truth = pq.read_table(storage.join(corpus, "hidden", "train_truth.parquet"))
    rows: dict[str, list] = {n: [] for n in schema.PSEUDO.names}
    for f, tag, mask in zip(*(truth.column(c).to_pylist() for c in ("file", "tag", "mask"))):
        gt = masks.decode_mask(mask)
        if not (gt > 0).any():
            continue
        img = imaging.decode_rgb(storage.read_bytes(storage.join(corpus, "search", f)))
        rows["id"].append(f)
        rows["tag"].append(tag)
        rows["label"].append(classes.index(tag) + 1)
        rows["image"].append(imaging.encode_jpeg(img))
        rows["mask"].append(mask)
        rows["attention"].append(imaging.encode_png((gt > 0).astype("uint8") * 255))
        rows["height"].append(gt.shape[0])
        rows["width"].append(gt.shape[1])
        rows["ignored"].append(0.0)
        rows["foreground"].append(float((gt > 0).mean()))
    shards.prepare(out)
    shards.write_table(pa.Table.from_pydict(rows, schema=schema.PSEUDO), out)
    shards.mark_complete(out, f"oracle-{time.time()}", {"images": len(rows["id"])})
    return len(rows["id"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/demo", help="a finished pipeline output folder")
    parser.add_argument("--out", default="headroom.json", help="JSON result file")
    args = parser.parse_args()

    from inetseg.pipeline import load_config
    from inetseg.stages import common, evaluate, predict, segmenter

    run = os.path.abspath(args.run)
    cfg = load_config("none", os.path.join(run, "config.yaml"), [])
    summary = storage.read_json(os.path.join(run, "summary.json"))
    classes = summary["classes"]
    common.ensure_ray(cfg.ray_address, cfg.num_cpus)
    oracle = os.path.join(run, "oracle")
    n = oracle_table(cfg.synth.out, classes, os.path.join(oracle, "pseudo"))
    t0 = time.time()
    seg = C.from_dict(C.SegmenterConfig, {**C.to_dict(cfg.segmenter), "pseudo": os.path.join(oracle, "pseudo"),
                                          "out": os.path.join(oracle, "segmenter")})
    segmenter.run(seg, resume=False)
    pred = C.from_dict(C.PredictConfig, {**C.to_dict(cfg.predict), "model": seg.out,
                                         "out": os.path.join(oracle, "predictions")})
    predict.run(pred, resume=False)
    ev = C.EvaluateConfig(predictions=pred.out, out=os.path.join(oracle, "eval"), classes=classes)
    oracle_result = evaluate.run(ev, resume=False)
    result = {
        "pipeline_miou_no_crf": summary["miou_no_crf"],
        "pipeline_miou": summary["miou"],
        "oracle_miou_no_crf": oracle_result["miou"],
        "baseline_miou": summary["baseline_miou"],
        "pseudo_label_miou": summary["pseudo_label_miou"],
        "oracle_train_images": n,
        "headroom_points": 100 * (oracle_result["miou"] - summary["miou_no_crf"]),
        "oracle_seconds": time.time() - t0,
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
