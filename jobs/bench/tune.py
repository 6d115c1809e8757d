"""Does the label-free objective track quality? A real `inetseg tune` search, each trial scored afterwards.

    python jobs/bench/tune.py --out jobs/bench/results/tune-demo.json                  # synthetic corpus (demo)
    python jobs/bench/tune.py --out F.json --source ../shared/data/real-dev --run runs/tune-real   # real photos

Runs the search as `inetseg tune` does (by default every trial to the end: the FIFO scheduler, so each has a final
objective; --scheduler asha runs it exactly as `inetseg tune` does, for its time), then, after the search and only
here, scores every trial's true quality: `pseudo_miou` (its pseudo labels against the synthetic corpus's hidden
truth, or against the masked training photos with --source) and, for a trial that ran to the end, `test_miou` (its
final segmenter, with the CRF when the run has it, on the test split). Reports `spearman` (rank correlation of the
final objective with test_miou over the finished trials), `spearman_pseudo` (with pseudo_miou),
`spearman_attention_rung_vs_pseudo` (the objective every trial reports after attention, ASHA's first cut, with
pseudo_miou), and two full pipeline runs on the test split: `default_test_miou` (the preset as it is) and
`best_test_miou` (the label-free best config, <run>/tune/best.yaml). --source is split as jobs/bench/real.py splits
it (--test-fraction of each tag's masked photos held out, by file-name hash).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from inetseg import audit, pipeline, registry, storage, tuning
from inetseg import config as C
from inetseg.config.tuning import TuneConfig
from inetseg.stages import audit as truth_audit


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tune.py", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--source", default="", help="a labelled photo folder: images/<tag>/, masks/, classes.json")
    p.add_argument("--test-fraction", type=float, default=0.2, help="--source: share of masked photos held out")
    p.add_argument("--run", default="", help="run root (default: runs/tune-bench, or runs/tune-bench-real)")
    p.add_argument("--preset", default="", help="pipeline preset (default: demo, or real with --source)")
    p.add_argument("--config", help="YAML merged over the preset")
    p.add_argument("--tune", dest="tune_file", help="YAML with tune keys (space:, ...); default: the default space")
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--seed", type=int, default=0, help="the searcher's seed")
    p.add_argument("--scheduler", choices=("fifo", "asha"), default="fifo",
                   help="fifo: every trial to the end (spearman over all); asha: as `inetseg tune` runs (its time; "
                        "the attention rung's objective against every trial's pseudo labels)")
    p.add_argument("--no-full-runs", action="store_true", help="skip the two full pipeline runs (a smoke test)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="pipeline keys, e.g. segmenter.epochs=4")
    return p.parse_args(argv)


def trial_quality(plan, trial: dict, truth: dict, test_table: str, root: str) -> dict:
    """The trial's pseudo-label mIoU (measured against `truth`) and, when it ran to the end, its final segmenter's
    test mIoU (a trial ASHA stopped has pseudo labels and no final model)."""
    from inetseg.train import tune_trial as T

    cfg = T.trial_config(trial["config"], plan)
    pseudo = truth_audit.pseudo_label_quality(cfg.attention.out, truth, plan.classes)
    got = {"pseudo_miou": pseudo["miou"], "pseudo_precision": pseudo["precision"]}
    if trial["finished"]:
        scoring = dataclasses.replace(plan, val_table=test_table, root=root)
        got["test_miou"] = T.val_miou(cfg, scoring, cfg.predict.model)["val_miou"]
    return got


def rank_agreement(trials: list[dict], objective, quality: str) -> dict:
    """Spearman of objective(trial) with trial[quality] over the trials that have both, and how many."""
    pairs = [(objective(t), t[quality]) for t in trials if quality in t and objective(t) is not None]
    return {"spearman": tuning.spearman([a for a, _ in pairs], [b for _, b in pairs]) if len(pairs) > 2 else None,
            "trials": len(pairs)}


def full_run(preset: str, config: str | None, overrides: list[str]) -> float:
    """A whole pipeline run's test mIoU (with the CRF when the config has it)."""
    return pipeline.run(pipeline.load_config(preset, config, overrides))["miou"]


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from inetseg.stages import tune
    from inetseg.stages.common import ensure_ray

    t0 = time.time()
    args.preset = args.preset or ("real" if args.source else "demo")
    run = storage.absolute(args.run or ("runs/tune-bench-real" if args.source else "runs/tune-bench"))
    overrides, truth = [*args.overrides, f"out={run}"], None
    if args.source:
        from jobs.ablation import source_split

        extra, truth = source_split(args, run)
        overrides += extra
    user = C.to_dict(pipeline.load_config(args.preset, args.config, overrides, resolve=False), internal_keys=False)
    cfg = pipeline.load_config(args.preset, args.config, overrides)
    tcfg = C.load(TuneConfig, args.tune_file, [f"num_samples={args.trials}", f"seed={args.seed}",
                                               f"scheduler={args.scheduler}", "promote=false"])
    tcfg.out = storage.join(run, "tune")
    ensure_ray(cfg.ray_address, cfg.num_cpus, quiet=True)
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    summary = tune.run_search(tcfg, cfg, user)
    plan, _ = tune.plan_search(tcfg, cfg)  # every stage reused: the plan the trials ran with
    truth = truth if truth is not None else audit.load_truth(cfg.synth.out)
    test_cfg = copy.deepcopy(plan.base)
    pipeline.run_one(test_cfg, registry.get("testset"), plan.classes)  # the test split as a table, for scoring
    trials = json.loads(storage.read_text(storage.join(tcfg.out, "trials.json")))
    for t in trials:
        if t["valid"] and t["objective"] is not None:
            t.update(trial_quality(plan, t, truth, test_cfg.testset.out, storage.join(tcfg.out, "test_scores")))
            print(f"trial {t['trial']}  {t['stage']:9s}  objective {t['objective']:+.4f}  pseudo mIoU "
                  f"{100 * t['pseudo_miou']:5.1f}" + (f"  test mIoU {100 * t['test_miou']:5.1f}" if t["finished"]
                                                     else ""), flush=True)
    final = [t for t in trials if t["finished"] and "test_miou" in t]
    at_attention = rank_agreement(trials, lambda t: t.get("rungs", {}).get("attention"), "pseudo_miou")
    result = {
        "corpus": f"photos from {args.source}" if args.source else "synthetic corpus", "preset": args.preset,
        "run": run, "overrides": args.overrides, "tune": C.to_dict(tcfg), "trials": trials,
        "spearman": rank_agreement(final, lambda t: t["objective"], "test_miou")["spearman"],
        "spearman_pseudo": rank_agreement(final, lambda t: t["objective"], "pseudo_miou")["spearman"],
        "finished_trials": len(final),
        # ASHA's first cut: the pseudo labels' evidence (the attention rung) against their true mIoU, every trial
        "spearman_attention_rung_vs_pseudo": at_attention["spearman"], "attention_rung_trials": at_attention["trials"],
        # ... and each of its terms alone (which one ranks the trials, which one works against the others)
        "spearman_attention_terms_vs_pseudo": {
            k: rank_agreement(trials, lambda t, k=k: t.get("rung_terms", {}).get("attention", {}).get(k),
                              "pseudo_miou")["spearman"] for k in ("p_in", "p_out", "area")},
        "best": summary["best"], "best_objective": summary["best_objective"], "mlflow_uri": summary["mlflow_uri"],
        "search_seconds": summary["seconds"]}
    storage.write_json(args.out, result)  # kept if the full runs are stopped
    if not args.no_full_runs:
        result["default_test_miou"] = full_run(args.preset, args.config, overrides)
        result["best_test_miou"] = full_run(args.preset, summary["best_yaml"], overrides)
    result["seconds"] = round(time.time() - t0, 1)
    storage.write_json(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k not in ("trials", "tune")}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (FileNotFoundError, C.ConfigError) as e:
        print(f"tune.py: error: {e}", file=sys.stderr)
        sys.exit(2)
