"""The paper's Table 1, trained: a segmenter per design choice, each scored on the test split.

    python jobs/ablation.py --out F.json [--run DIR] [--seeds 0,1,2] [--fast] [key=value ...]
    python jobs/ablation.py --out F.json --source DIR --preset real [--seeds 0,1,2] [key=value ...]

Runs (or reuses) the pipeline's shared stages under --run (corpus, ingest, filter, split, classifier), then
per row the stages that row adds, in <run>/ablation/[<name>/]<row>/, all with the same schedule:

    forward              forward CAM only (Eqn 5), one cut             attention -> segmenter -> predict
    backward             excitation product B_2 * B_3b (Eqn 7), one cut     "
    fused                Eqn 8, one cut                                     "
    fused_smooth         + segment smoothing (Eqn 9), one cut               "
    fused_smooth_trimap  + trimap (Eqn 10): the pipeline's attention        "
    online_finetune      + online fine-tuning (Eqn 11-12) of fused_smooth_trimap's segmenter -> predict
    crf                  + dense CRF on online_finetune's predictions

"One cut" labels a pixel with the image's tag where its attention is above attention.delta_background (the
trimap's background threshold), background elsewhere. Every row uses the same images: the run has
finetune.enabled=true, so the classifier, attention and every segmenter train on split/train and online
fine-tuning labels the held-out share (when the run's own config has fine-tuning off, the ablation's
classifier goes to <run>/ablation/classifier). Rows differ only in their attention settings and added
stages; everything else is the preset's config with your key=value overrides. Each row's `miou` is its
segmenter on the test split without CRF (the crf row: with it). The five attention rows also report their
pseudo labels' `pseudo_miou`, `precision` (pixel accuracy where labelled) and `ignored` (share left out),
measured after the fact against the synthetic corpus's hidden truth, or with --source against the masked
training photos (nothing flows back into training).

Seeds: --seeds 0,1,2 runs the whole table once per run seed (key seed=, which every stage seed left at 0
follows, the synthetic corpus's included; seed 0 in <run>, seed s in <run>/seed<s>) and reports per row the
mean, max-min and std; the claims are judged on the means, and a difference smaller than the crf row's
max-min (else online_finetune's, else fused_smooth_trimap's) is marked "no difference".

--source DIR: a labelled photo collection (images/<tag>/, masks/, classes.json), split as
jobs/bench/real.py splits it (--test-fraction of each tag's masked photos held out as the test split, by
file-name hash; laid out under <run>/data). Without --source the run must use source=synth.

--fast: a tiny corpus and schedule (the FAST overrides in jobs/ablation_rows.py, those the config has)
that runs the whole table in about a minute on 2 CPU cores: it checks the machinery, not the claims.

Writes F.json, F.md (table and claims) and F.png (pseudo labels and test predictions per row), and an
MLflow parent run (tag inetseg.kind=ablation) with a nested run per row, in <run>/mlflow.db by default.
A re-run with the same settings reuses every finished stage.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from inetseg import config as C
from inetseg import pipeline, storage
from inetseg.sources import tagged
from jobs import ablation_rows as AR
from jobs import ablation_table as AT


def parse(argv: list[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    ap = argparse.ArgumentParser(prog="ablation.py", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="JSON file to write (.md and .png beside it)")
    ap.add_argument("--preset", default="", help="pipeline preset (default: demo, or real with --source)")
    ap.add_argument("--config", help="YAML merged over the preset")
    ap.add_argument("--run", default="", help="run root; its finished stages are reused (default: the preset's out)")
    ap.add_argument("--rows", default=",".join(AT.BY_NAME), help="comma-separated rows (the rows they build on "
                                                                 "run too)")
    ap.add_argument("--seeds", default="0", help="comma-separated run seeds, the whole table per seed")
    ap.add_argument("--source", default="", help="a labelled photo folder: images/<tag>/, masks/, classes.json")
    ap.add_argument("--test-fraction", type=float, default=0.2, help="--source: share of each tag's masked "
                                                                      "photos held out (as jobs/bench/real.py)")
    ap.add_argument("--fast", action="store_true",
                    help="tiny corpus and schedule: the whole table in minutes (checks the machinery, not the claims)")
    ap.add_argument("--name", default="", help="keep a variant's rows apart: <run>/ablation/<name>/<row>")
    ap.add_argument("--picture-images", type=int, default=6, help="images per block of the picture (0 = none)")
    ap.add_argument("overrides", nargs="*", metavar="key=value", help="pipeline keys, e.g. attention.lambda1=2")
    return ap, ap.parse_args(argv)


def check_source(source: str) -> str:
    """'' when `source` looks like a labelled photo collection, else what is wrong with it."""
    images = os.path.join(source, "images")
    if not os.path.isdir(images) or not any(os.path.isdir(os.path.join(images, d)) for d in os.listdir(images)):
        return f"--source {source}: no images/<tag>/ folders"
    if not os.path.isdir(os.path.join(source, "masks")):
        return f"--source {source}: no masks/ folder"
    if not os.path.isfile(os.path.join(source, "classes.json")):
        return f"--source {source}: no classes.json"
    return ""


def source_split(args: argparse.Namespace, run: str) -> tuple[list[str], dict]:
    """--source: the split laid out under <run>/data; the overrides that point the run at it, and the
    masked training photos' truth (row id -> {'mask'}), for measuring pseudo labels only."""
    from jobs.bench.real import training_truth

    split = tagged.plan_split(args.source, args.test_fraction)
    dirs = tagged.layout(split, os.path.join(run, "data"))
    truth = {k: v for k, v in training_truth(split, dirs["train"]).items() if v["mask"]}
    return [f"source={dirs['train']}", f"test={dirs['test']}", f"ingest.classes={','.join(split.classes)}"], truth


def quiet_ray(cfg) -> None:
    """Start Ray as every job does, quiet: a line per row instead of progress bars and worker logs."""
    from inetseg.stages.common import ensure_ray

    ensure_ray(cfg.ray_address, cfg.num_cpus, quiet=True)
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # a line per dataset read and write


def run_seed(args, seed: int, run: str, overrides: list[str], rows: list[str], truth: dict | None,
             tracker, single: bool) -> tuple[dict, dict, dict]:
    """The whole table for one run seed: {row: entry}, {row: its run config} and the truth (for the picture)."""
    from inetseg import audit

    cfg = AR.load_base(args.preset, args.config, overrides, run, seed)
    classes = AR.shared_stages(cfg)
    truth = truth if truth is not None else audit.load_truth(cfg.synth.out)
    root = storage.join(cfg.out, "ablation", *([args.name] if args.name else []))
    entries, configs = {}, {}
    for name in rows:
        row = AT.BY_NAME[name]
        rcfg = AR.row_config(cfg, row, root)
        with tracker.stage(name if single else f"{name} seed{seed}", AR.row_params(row, rcfg, seed)) as st:
            entry = AR.run_row(rcfg, row, classes, truth, st)
            st.log_metrics({k: entry[k] for k in AT.METRICS if entry.get(k) is not None})
        print(AT.row_line(seed, name, entry), flush=True)
        entries[name], configs[name] = entry, rcfg
    return entries, configs, truth


def assemble(args, run: str, rows: list[str], per_seed: dict[str, dict[int, dict]], seeds: list[int],
             overrides: list[str]) -> dict:
    """The JSON: settings, a summary per row over the seeds so far, the claims judged on the means."""
    summary = {name: AT.summarise(per_seed[name]) for name in rows if per_seed[name]}
    nz = AT.noise(summary)
    details = AT.goals(summary, nz["points"] if nz else None)
    first = next(iter(summary.values()))
    return {"corpus": f"photos from {args.source}" if args.source else "synthetic corpus",
            "pseudo_truth": "masked training photos" if args.source else "the synthetic corpus's hidden truth",
            "preset": args.preset, "run": run, "name": args.name, "fast": args.fast, "overrides": overrides,
            "seeds": [s for s in seeds if all(str(s) in r["per_seed"] for r in summary.values())],
            "runs": {str(s): AR.seed_dir(run, s) for s in seeds}, "test_images": first.get("test_images"),
            "settings": {n: {"what": AT.BY_NAME[n].what, "attention": AT.BY_NAME[n].attention,
                             "base": AT.BY_NAME[n].base} for n in rows},
            "row_order": list(summary), "rows": summary, "noise": nz,
            "goals": {k: g["met"] for k, g in details.items()}, "goal_details": details, "complete": False}


def write_outputs(args, result: dict, configs: dict, truth: dict, tracker) -> list[str]:
    """F.json, F.md, F.png and the parent MLflow run's metrics and artifacts; returns the files written."""
    from jobs.ablation_picture import picture

    stem = os.path.splitext(args.out)[0]
    md = AT.markdown(result)
    storage.write_json(args.out, result)
    storage.write_text(stem + ".md", md)
    rows = result["rows"]
    tracker.log_metrics({f"{n}_{k}": r[k] for n, r in rows.items() for k in AT.METRICS if r.get(k) is not None})
    tracker.log_metrics({f"goal_{k}": float(v) for k, v in result["goals"].items()})
    tracker.log_json("ablation.json", result)
    tracker.log_text("ablation.md", md)
    if args.picture_images <= 0:
        return [args.out, stem + ".md"]
    attention_rows = {n: c.attention.out for n, c in configs.items() if "attention" in AR.owned_stages(AT.BY_NAME[n])}
    png = picture(attention_rows, truth, {n: c.evaluate.predictions for n, c in configs.items()}, args.picture_images)
    storage.write_bytes(stem + ".png", png)
    tracker.log_artifact_bytes("ablation.png", png)
    return [args.out, stem + ".md", stem + ".png"]


def prepare(argv: list[str] | None) -> tuple[argparse.Namespace, list[int], list[str], list[str], str, dict | None]:
    """Check the command line (one-line errors before any work): args, seeds, rows to run, pipeline overrides,
    the run root and, with --source, the masked training photos' truth."""
    ap, args = parse(argv)
    asked = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in asked if r not in AT.BY_NAME]
    if unknown or not asked:
        ap.error(f"unknown rows {unknown}; choose from {', '.join(AT.BY_NAME)}")
    try:
        seeds = list(dict.fromkeys(int(s) for s in args.seeds.split(",") if s.strip()))
    except ValueError:
        ap.error(f"--seeds {args.seeds}: give comma-separated integers, e.g. 0,1,2")
    if not seeds or min(seeds) < 0:
        ap.error(f"--seeds {args.seeds}: give comma-separated integers >= 0")
    if args.name in {*AT.BY_NAME, "classifier", "classifier_ray_train"} or "/" in args.name:
        ap.error(f"--name {args.name}: a variant's own folder name, not a row or 'classifier'")
    if args.source and (problem := check_source(args.source)):
        ap.error(problem)
    args.preset = args.preset or ("real" if args.source else "demo")
    overrides = [*(AR.fast_overrides() if args.fast else []), *args.overrides]
    try:
        given = [*overrides, *([f"source={args.source}"] if args.source else [])]
        first = pipeline.load_config(args.preset, args.config, given, resolve=False)
    except C.ConfigError as e:
        ap.error(str(e))
    if not args.source and first.source != "synth":
        ap.error("without --source the ablation measures pseudo labels against the synthetic corpus's hidden truth: "
                 "needs source=synth (or give --source DIR, a labelled photo folder)")
    run, truth = storage.absolute(args.run or first.out), None
    if args.source:
        extra, truth = source_split(args, run)
        overrides += extra
    rows = AT.with_dependencies(asked)
    if rows != [r for r in AT.BY_NAME if r in asked]:
        print(f"ablation: also running {sorted(set(rows) - set(asked))}, rows the asked ones build on", flush=True)
    return args, seeds, rows, overrides, run, truth


def main(argv: list[str] | None = None) -> int:
    args, seeds, rows, overrides, run, truth = prepare(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from inetseg.tracking import Tracker

    base = AR.load_base(args.preset, args.config, overrides, run, seeds[0])
    quiet_ray(base)
    tracker = Tracker(base.mlflow_uri or Tracker.default_uri(run), base.experiment)
    tracker.start_parent(f"ablation-{time.strftime('%Y%m%d-%H%M%S')}",
                         {**C.flatten(C.to_dict(base)), "ablation.rows": ",".join(rows), "ablation.seeds": args.seeds,
                          "ablation.fast": args.fast, "ablation.source": args.source or "synth"},
                         tags={"inetseg.kind": "ablation"})
    per_seed: dict[str, dict[int, dict]] = {name: {} for name in rows}
    try:
        for seed in seeds:
            entries, configs, seed_truth = run_seed(args, seed, run, overrides, rows, truth, tracker, len(seeds) == 1)
            for name, entry in entries.items():
                per_seed[name][seed] = entry
            if seed == seeds[0]:
                pictured = (configs, seed_truth)
            storage.write_json(args.out, assemble(args, run, rows, per_seed, seeds, overrides))  # kept if stopped
        result = {**assemble(args, run, rows, per_seed, seeds, overrides), "complete": True}
        written = write_outputs(args, result, *pictured, tracker)
        tracker.end("FINISHED")
    except BaseException:
        tracker.end("FAILED")
        raise
    print(f"\n{AT.console(result)}\n\nwritten: {', '.join(written)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (FileNotFoundError, C.ConfigError) as e:  # a user mistake or a stage that cannot go on: one line
        print(f"ablation.py: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("ablation.py: interrupted; finished stages and rows are reused on a re-run", file=sys.stderr)
        sys.exit(130)
