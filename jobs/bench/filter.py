"""Filter quality: the paper's three rounds vs out-of-fold scoring, against the corpus's hidden noise labels.

    python jobs/bench/filter.py --out filter.json [--preset demo] [key=value ...]

Builds the preset's synthetic corpus (default: the demo's), ingests it, then runs the filter stage
twice on the same images: `paper` (each round's classifier scores its own training images) and
`oof` (k-fold cross-fitting: each image scored by a model that never trained on it). For each mode
and each round: noise_before / noise_after (share of wrong-tag and no-object images in what goes in
and what is kept), precision and recall of the removed images, and the share of clean images kept.
The hidden sidecar is read here, after the stages ran, as a measurement only.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from inetseg import audit, filtering, pipeline, storage
from inetseg.ingest.duplicates import usable_ids


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--run", default="runs/demo", help="output root (corpus, images, filter runs); a finished "
                    "pipeline run there is reused")
    ap.add_argument("--modes", default="paper,oof")
    ap.add_argument("overrides", nargs="*", help="pipeline key=value overrides, e.g. filter.folds=5")
    args = ap.parse_args()

    from inetseg.sources import synth
    from inetseg.stages import filter as filter_stage
    from inetseg.stages import ingest
    from inetseg.stages.common import ensure_ray

    cfg = pipeline.load_config(args.preset, None, [f"out={args.run}", *args.overrides])
    ensure_ray(cfg.ray_address, cfg.num_cpus)
    synth.generate(cfg.synth, cfg.synth.out)
    classes = storage.read_json(storage.join(cfg.synth.out, "classes.json"))["classes"]
    cfg.ingest.classes = classes
    ingest.run(cfg.ingest)
    truth = audit.load_truth(cfg.synth.out)
    result: dict = {"preset": args.preset, "overrides": args.overrides, "images": len(usable_ids(cfg.ingest.out))}
    for mode in args.modes.split(","):
        fcfg = copy.deepcopy(cfg.filter)
        fcfg.mode = mode
        # The pipeline's own mode keeps the pipeline's folder, so a finished run with the same --run is reused.
        fcfg.out = cfg.filter.out if mode == cfg.filter.mode else storage.join(cfg.out, f"filter-{mode}")
        t0 = time.time()
        meta = filter_stage.run(fcfg)
        entry = audit.filter_quality(fcfg.images, filtering.filtered_images(fcfg), truth)
        entry["seconds"] = meta.get("seconds", time.time() - t0)
        entry["rounds"] = []
        images_in = fcfg.images
        for r in meta["rounds"]:
            images_out = storage.join(fcfg.out, f"round{r['round']}", "images")
            q = audit.filter_quality(images_in, images_out, truth)
            entry["rounds"].append({"round": r["round"], "rule": r["rule"],
                                    "classifier_val_acc": r["classifier_val_acc"], **q})
            images_in = images_out
        result[mode] = entry
        print(f"{mode}: noise {entry['noise_before']:.3f} -> {entry['noise_after']:.3f}, precision "
              f"{entry['precision']:.3f}, recall {entry['recall']:.3f}, clean kept {entry['clean_kept']:.3f}",
              flush=True)
    storage.write_json(args.out, result)
    print(json.dumps({m: {k: v for k, v in result[m].items() if k != "rounds"} for m in args.modes.split(",")},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
