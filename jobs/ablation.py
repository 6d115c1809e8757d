"""The attention model's ablation, like the paper's Table 1: pseudo-label quality per component.

    python jobs/ablation.py --out ablation.json [--run runs/demo] [--preset demo] [key=value ...]

Reuses (or runs) a pipeline's corpus, ingest, filter rounds and final classifier under --run, then
runs the attention stage once per row into <run>/ablation/[<name>/]<row>:

    forward              forward CAM only (Eqn 5)                      one cut, nothing ignored
    backward             excitation product B_2 * B_3b only (Eqn 7)    one cut, nothing ignored
    fused                Eqn 8                                         one cut, nothing ignored
    fused_smooth         Eqn 8 + segment smoothing (Eqn 9)             one cut, nothing ignored
    fused_smooth_trimap  Eqn 8 + Eqn 9 + trimap (Eqn 10)               object > delta_object, ignored band

"One cut" labels a pixel with the image's tag where its attention is above attention.delta_background
(0.5 by default; the trimap's background threshold, so the rows differ only in the band they leave
out), and background elsewhere. Each row's pseudo labels are scored against the synthetic corpus's
hidden train masks (a measurement after the stage ran; nothing flows back): mIoU, precision (pixel
accuracy over the pixels it labels) and ignored (share of pixels it leaves out). Writes the JSON,
a Markdown table and a picture grid (.md, .png) beside it, and an MLflow run (a nested run per row).
"""
from __future__ import annotations

import argparse
import copy
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from inetseg import config as C
from inetseg import pipeline, storage

# name -> the attention settings that differ from the pipeline's (paper rows of Table 1, in order).
ROWS: dict[str, dict] = {
    "forward": {"maps": "forward", "smoothing": False, "trimap": False},
    "backward": {"maps": "backward", "smoothing": False, "trimap": False},
    "fused": {"maps": "fused", "smoothing": False, "trimap": False},
    "fused_smooth": {"maps": "fused", "smoothing": True, "trimap": False},
    "fused_smooth_trimap": {"maps": "fused", "smoothing": True, "trimap": True},
}


def markdown(result: dict) -> str:
    """The ablation as a Markdown table (percentages)."""
    lines = ["| row | mIoU | precision | ignored | seconds |", "|---|---:|---:|---:|---:|"]
    for name in result["rows"]:
        r = result[name]
        lines.append(f"| {name} | {100 * r['miou']:.1f} | {100 * r['precision']:.1f} | {100 * r['ignored']:.1f} "
                     f"| {r['seconds']:.0f} |")
    goals = result.get("goals", {})
    if goals:
        lines += ["", *[f"- {k}: {'yes' if v else 'NO'}" for k, v in goals.items()]]
    return "\n".join(lines) + "\n"


def goals(result: dict) -> dict:
    """The paper's three claims, checked on these rows (only those whose rows ran)."""
    g = {}
    if all(k in result for k in ("forward", "backward", "fused")):
        g["fused beats forward and backward"] = result["fused"]["miou"] > max(result["forward"]["miou"],
                                                                            result["backward"]["miou"])
    if all(k in result for k in ("fused", "fused_smooth")):
        g["smoothing adds to fused"] = result["fused_smooth"]["miou"] > result["fused"]["miou"]
    if all(k in result for k in ("fused_smooth", "fused_smooth_trimap")):
        g["trimap raises precision"] = result["fused_smooth_trimap"]["precision"] > result["fused_smooth"]["precision"]
    return g


def picture(row_dirs: dict[str, str], truth: dict, n: int) -> bytes:
    """PNG grid: for the first n pseudo-labelled images, the image, each row's attention, the trimap, the GT."""
    import numpy as np
    import pyarrow.parquet as pq

    from inetseg import imaging, masks, shards, viz

    first = next(iter(row_dirs.values()))
    fs, _ = storage.resolve(first)
    ids, images = [], []
    for f in shards.parquet_files(first):
        t = pq.read_table(storage.resolve(f)[1], filesystem=fs, columns=["id", "image"])
        for i, b in zip(t.column("id").to_pylist(), t.column("image").to_pylist()):
            if i in truth and len(ids) < n:
                ids.append(i)
                images.append(imaging.decode_rgb(b))
    per_row: dict[str, dict] = {}
    wanted = set(ids)
    for name, d in row_dirs.items():
        t = shards.read_table(d, columns=["id", "attention", "mask"])
        keep = {i: (a, m) for i, a, m in zip(*(t.column(c).to_pylist() for c in ("id", "attention", "mask")))
                if i in wanted}
        per_row[name] = keep
    cells = []
    for i, im in zip(ids, images):
        row = [im]
        for name in row_dirs:
            row.append(viz.heatmap(masks.decode_mask(per_row[name][i][0]).astype(np.float32) / 255))
        last = list(row_dirs)[-1]
        row.append(viz.colorize(masks.decode_mask(per_row[last][i][1])))
        row.append(viz.colorize(masks.decode_mask(truth[i]["mask"])))
        cells.append(row)
    titles = ["image", *row_dirs, "pseudo label", "hidden GT"]
    return viz.encode_png(viz.grid(cells, [t[:14] for t in titles]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="JSON file to write (a .md table is written beside it)")
    ap.add_argument("--preset", default="demo", help="pipeline preset (default: demo)")
    ap.add_argument("--run", default="runs/demo", help="pipeline output root; its finished stages are reused")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {', '.join(ROWS)}")
    ap.add_argument("--name", default="", help="keep this variant's rows apart: <run>/ablation/<name>/<row>")
    ap.add_argument("--picture-images", type=int, default=6, help="images in the MLflow picture grid")
    ap.add_argument("overrides", nargs="*", help="pipeline key=value overrides, e.g. attention.lambda1=2")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        ap.error(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    try:
        cfg = pipeline.load_config(args.preset, None, [f"out={args.run}", *args.overrides])
    except C.ConfigError as e:
        ap.error(str(e))
    if cfg.source != "synth":
        ap.error("the ablation scores against the synthetic corpus's hidden masks: needs source=synth")

    from inetseg import audit, registry
    from inetseg.stages import attention
    from inetseg.stages.common import ensure_ray
    from inetseg.tracking import Tracker

    ensure_ray(cfg.ray_address, cfg.num_cpus)
    classes: list[str] = []
    for stage in registry.stages_of(cfg):  # the pipeline's stages up to the classifier (finished ones reused)
        if stage.name == "attention":
            break
        classes = classes or list(pipeline.run_one(cfg, stage, classes).get("classes") or [])
    truth = audit.load_truth(cfg.synth.out)

    tracker = Tracker(cfg.mlflow_uri or Tracker.default_uri(cfg.out), cfg.experiment)
    tracker.start_parent(f"ablation-{time.strftime('%Y%m%d-%H%M%S')}", C.flatten(C.to_dict(cfg.attention)),
                         tags={"inetseg.kind": "ablation"})
    result: dict = {"preset": args.preset, "run": cfg.out, "overrides": args.overrides, "rows": rows,
                    "one_cut_threshold": cfg.attention.delta_background,
                    "trimap": {"delta_object": cfg.attention.delta_object,
                               "delta_background": cfg.attention.delta_background}}
    row_dirs: dict[str, str] = {}
    try:
        for name in rows:
            acfg = copy.deepcopy(cfg.attention)
            for k, v in ROWS[name].items():
                setattr(acfg, k, v)
            # Its own folder even for the pipeline's own setting: overrides (attention.cam_norm=...) must
            # never overwrite the pipeline's pseudo labels. A re-run with the same settings reuses it.
            acfg.out = storage.join(cfg.out, "ablation", *([args.name] if args.name else []), name)
            with tracker.stage(name, {**ROWS[name], "out": acfg.out}) as st:
                t0 = time.time()
                meta = attention.run(acfg, cfg.resume)
                q = audit.pseudo_label_quality(acfg.out, truth, classes)
                entry = {"miou": q["miou"], "precision": q["precision"], "ignored": q["ignored"],
                         "images": q["images"], "per_class_iou": q["per_class_iou"],
                         "seconds": meta.get("seconds", time.time() - t0), "settings": ROWS[name]}
                st.log_metrics({k: entry[k] for k in ("miou", "precision", "ignored", "images")})
            result[name] = entry
            row_dirs[name] = acfg.out
            print(f"{name:<22} mIoU {100 * entry['miou']:5.1f}  precision {100 * entry['precision']:5.1f}  "
                  f"ignored {100 * entry['ignored']:5.1f}", flush=True)
        result["goals"] = goals(result)
        storage.write_json(args.out, result)
        md = markdown(result)
        storage.write_text(os.path.splitext(args.out)[0] + ".md", md)
        tracker.log_metrics({f"{n}_{k}": result[n][k] for n in rows for k in ("miou", "precision", "ignored")})
        tracker.log_json("ablation.json", result)
        tracker.log_text("ablation.md", md)
        if args.picture_images > 0 and row_dirs:
            png = picture(row_dirs, truth, args.picture_images)
            storage.write_bytes(os.path.splitext(args.out)[0] + ".png", png)
            tracker.log_artifact_bytes("ablation.png", png)
        tracker.end("FINISHED")
    except BaseException:
        tracker.end("FAILED")
        raise
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
