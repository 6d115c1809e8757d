"""Tune stage: a Ray Tune search over pipeline keys (Optuna's TPE + ASHA by default). The stages before the first
tuned key run once, on the driver; each trial runs the rest in folders shared by trials that agree so far
(train/tune_trial.py); the objective is label-free (tuning.evidence_score) unless a labelled folder is given.
Each trial is a nested MLflow run; the best values go to <out>/best.yaml, a --config for jobs/full_pipeline.py."""
from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
import warnings
from typing import Any

from ray import tune

from inetseg import config as C
from inetseg import pipeline, registry, storage, tune_records, tuning
from inetseg.config.tuning import TuneConfig
from inetseg.tracking import CHAMPION, Tracker, promote
from inetseg.train import tune_trial as T

log = logging.getLogger("inetseg")
EXPERIMENT = "search"  # Ray Tune's experiment folder under the tune out


def distributions(space: dict[str, tuple[str, list]]) -> dict[str, Any]:
    """Ray Tune's search space for the checked space."""
    make = {"uniform": lambda a: tune.uniform(*a), "loguniform": lambda a: tune.loguniform(*a),
            "randint": lambda a: tune.randint(a[0], a[1] + 1), "choice": lambda a: tune.choice(a)}
    return {key: make[kind](args) for key, (kind, args) in space.items()}


def defaults_inside(space: dict[str, tuple[str, list]], cfg: Any) -> list[dict]:
    """The run's own values as the first point to evaluate, when each lies in its range (the default is then a
    trial like any other, and the search can only report a setting it scored above it)."""
    point = {}
    for key, (kind, args) in space.items():
        value = cfg
        for part in key.split("."):
            value = getattr(value, part)
        inside = value in args if kind == "choice" else args[0] <= value <= args[1]
        if not inside:
            return []
        point[key] = value
    return [point]


def prepare(tcfg: TuneConfig, cfg: Any) -> tuple[Any, dict[str, tuple[str, list]]]:
    """The tuned run's config (its own stages from split on under the tune out, the validation share kept out)
    and the space, without keys of stages the run lacks (warned)."""
    cfg = copy.deepcopy(cfg)
    if tcfg.objective == "label_free":
        cfg.split.val_share = cfg.split.val_share or tcfg.val_share
        if not cfg.finetune.enabled:
            cfg.split.share = 0.0  # no fine-tuning: hold back nothing for it
    # The objective applies the CRF itself when the run has one, test set or not.
    present = {s.name for s in registry.stages_of(cfg)} | ({"crf"} if cfg.crf.enabled else set())
    space = tuning.check_space(tcfg.space, cfg)
    for key in list(space):
        head = key.split(".")[0]
        if head in {s.name for s in registry.REGISTRY.pipeline} - present:
            log.warning("tune: %s left out of the search: the run has no %s stage", key, head)
            del space[key]
    if not space:
        raise C.ConfigError("tune: no key of the space acts in this run (see the warnings above)")
    # Everything from the split on is the tuned run's own: a plain run's classifier in the same out trained on
    # the validation images too, and must stay as it was.
    names = [s.name for s in registry.REGISTRY.pipeline]
    return T.relocate(cfg, set(names[names.index("split"):]), lambda s: storage.join(tcfg.out, "base", s.folder)), space


def shared(cfg: Any, first: str) -> list[str]:
    """Run (or reuse) every stage before `first` except the test-set ones; returns the run's classes."""
    if cfg.source != "synth":
        pipeline.check_sources(cfg)
    classes: list[str] = []
    order = [s.name for s in registry.REGISTRY.pipeline]
    for stage in registry.stages_of(cfg):
        if order.index(stage.name) >= order.index(first):
            break
        if stage.name not in T.SCORING:
            meta = pipeline.run_one(cfg, stage, classes)
            classes = classes or list(meta.get("classes") or [])
    return classes


class TrialLog(tune.Callback):
    """Each trial as one line on the console and a nested MLflow run (its values, every report as a step)."""

    def __init__(self, tracker: Tracker):
        self.tracker, self.reports = tracker, {}

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self.reports.setdefault(trial.trial_id, []).append({k: result[k] for k in ("objective", "stage", "valid")
                                                            if k in result})
        log.info("tune: trial %s %s objective %.4f  %s", trial.trial_id, result.get("stage", ""),
                 result["objective"], _values(trial.config))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._log(trial, "FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        log.warning("tune: trial %s failed (%s): counted, the search goes on", trial.trial_id, trial.error_file)
        self._log(trial, "FAILED")

    def _log(self, trial: Any, status: str) -> None:
        with self.tracker.stage(f"trial {trial.trial_id}", {**trial.config, "status": status}) as st:
            for step, rep in enumerate(self.reports.pop(trial.trial_id, [])):
                st.log_metrics({"objective": rep["objective"]}, step=step)


def _values(config: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(config.items()))


def tuner(tcfg: TuneConfig, plan: T.Plan, space: dict, cfg: Any, tracker: Tracker, resuming: bool) -> tune.Tuner:
    """A new Tuner, or (resuming) the killed search in <out>/search restored (finished trials are kept, not
    re-run)."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.basic_variant import BasicVariantGenerator
    from ray.tune.search.optuna import OptunaSearch

    # A trial only orchestrates: its stages' Ray Data / Train tasks reserve their own CPUs. Even 0.01 CPU held by
    # the trial leaves a 2-CPU machine 0.99 free beside a 1-CPU actor, and a 1-CPU read task waits forever; a
    # placement group needs some resource, so the trial holds 1 MiB of memory.
    trainable = tune.with_resources(tune.with_parameters(T.trial, plan=plan, reduction_factor=tcfg.reduction_factor),
                                    {"cpu": 0, "memory": 2**20})
    path = storage.join(tcfg.out, EXPERIMENT)
    # Ray Tune saves the search's state every 10 s or more: a trial finished just before a kill would run again.
    # Trials take minutes and the state is small, so save it every 2 s.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    if resuming:  # _search decided it and checked the search's scoring keys
        log.info("tune: resuming the search in %s (finished trials are kept)", path)
        return tune.Tuner.restore(path, trainable, resume_errored=True)
    storage.write_json(storage.join(tcfg.out, tune_records.SETTINGS), tune_records.scoring_settings(tcfg))
    points = defaults_inside(space, cfg)
    if tcfg.search == "optuna":
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # OptunaSearch hands Optuna every report as a step; a trial ASHA resumes repeats none, yet Optuna warns.
        warnings.filterwarnings("ignore", message="The reported value is ignored", category=UserWarning)
        searcher: Any = ConcurrencyLimiter(OptunaSearch(points_to_evaluate=points, seed=tcfg.seed),
                                           max_concurrent=tcfg.max_concurrent)
    else:
        searcher = BasicVariantGenerator(points_to_evaluate=points, max_concurrent=tcfg.max_concurrent,
                                         random_state=tcfg.seed)
    # ASHA's time is the rung (1, r, r^2: T.rung_value), so its cuts fall exactly after attention and after the
    # first segmenter; a trial goes on when it is in the top 1/r of the trials scored at that rung so far.
    rungs = len(plan.rungs)
    scheduler = (ASHAScheduler(time_attr="rung", max_t=T.rung_value(rungs - 1, tcfg.reduction_factor),
                               grace_period=1, reduction_factor=tcfg.reduction_factor)
                 if tcfg.scheduler == "asha" and rungs > 1 else FIFOScheduler())
    return tune.Tuner(
        trainable, param_space=distributions(space),
        tune_config=tune.TuneConfig(metric="objective", mode="max", search_alg=searcher, scheduler=scheduler,
                                    num_samples=tcfg.num_samples, max_concurrent_trials=tcfg.max_concurrent),
        run_config=tune.RunConfig(name=EXPERIMENT, storage_path=storage.absolute(tcfg.out), verbose=0,
                                  callbacks=[TrialLog(tracker)], failure_config=tune.FailureConfig(max_failures=1)))


def plan_search(tcfg: TuneConfig, cfg: Any) -> tuple[T.Plan, dict]:
    """The tuned run's config with its shared stages run (or reused), the trials' plan and the checked space."""
    cfg, space = prepare(tcfg, cfg)
    order = [s.name for s in registry.REGISTRY.pipeline]  # the pipeline's order, whichever stages this run has
    first = tuning.first_stage(list(space), order)
    log.info("tune: %d trials over %s; shared stages up to %s", tcfg.num_samples, ", ".join(space), first)
    classes = shared(cfg, first)
    plan = T.Plan(base=cfg, classes=classes, order=order, first=first, root=storage.join(tcfg.out, "stages"),
                  objective=tcfg.objective, val_table=_val_table(tcfg, cfg, classes), val_images=tcfg.val_images,
                  area_weight=tcfg.area_weight)
    plan.rungs = T.rungs_of([s.name for s in T.trial_stages(cfg, plan)], order, tcfg.objective == "label_free")
    log.info("tune: each trial reports after %s", ", ".join(plan.rungs))
    return plan, space


def run_search(tcfg: TuneConfig, cfg: Any, user_config: dict) -> dict:
    """The whole search: shared stages, Tuner (or restore), best.yaml, trials.json, MLflow; returns the summary
    (best values and objective, counts of trials)."""
    t0 = time.time()
    with storage.exclusive(cfg.out):  # the shared stages write into the pipeline's out, as a run would
        return _search(tcfg, cfg, user_config, t0)


def _search(tcfg: TuneConfig, cfg: Any, user_config: dict, t0: float) -> dict:
    resuming = tcfg.resume and tune.Tuner.can_restore(storage.join(tcfg.out, EXPERIMENT))
    if resuming:
        tune_records.check_resumable(tcfg)  # before any work: a search that cannot resume as asked starts nothing
    tracker = Tracker(cfg.mlflow_uri or Tracker.default_uri(tcfg.out), cfg.experiment)
    parent_file = storage.join(tcfg.out, "mlflow_parent.json")  # a resumed search keeps its parent run
    resumed = (json.loads(storage.read_text(parent_file))["run_id"]
               if tcfg.resume and storage.exists(parent_file) else "")
    run_id = tracker.start_parent(cfg.run_name or f"tune-{time.strftime('%Y%m%d-%H%M%S')}",
                                  C.flatten({"tune": C.to_dict(tcfg)}), tags={"inetseg.kind": "tune"}, run_id=resumed)
    storage.write_text(parent_file, json.dumps({"run_id": run_id}))
    try:
        plan, space = plan_search(tcfg, cfg)
        grid = tuner(tcfg, plan, space, plan.base, tracker, resuming).fit()
        summary = finish(tcfg, plan.base, user_config, tune_records.trials_table(grid), tracker)
    except BaseException:
        tracker.end("FAILED")
        raise
    summary["seconds"] = round(time.time() - t0, 1)
    summary["mlflow_uri"] = tracker.uri
    storage.write_json(storage.join(tcfg.out, "summary.json"), summary)
    return summary


def _val_table(tcfg: TuneConfig, cfg: Any, classes: list[str]) -> str:
    """label_free: the split's val/ table; val_miou: the validation folder as a test table (testset stage)."""
    if tcfg.objective == "label_free":
        return registry.get("split").products["val"](cfg.split)
    vcfg = C.TestSetConfig(test=tcfg.val, out=storage.join(tcfg.out, "val_table"), classes=list(classes))
    if storage.absolute(tcfg.val) == storage.absolute(cfg.test or "-"):
        raise C.ConfigError("tune: val= is the run's test folder; tune on a validation folder, never the test split")
    registry.get("testset").function()(vcfg, True)
    return vcfg.out


def finish(tcfg: TuneConfig, cfg: Any, user_config: dict, rows: list[dict], tracker: Tracker) -> dict:
    """best.yaml (the best finished trial's values over the user's config), trials.json, the parent run's metrics;
    with promote, the best segmenter registered and made @champion."""
    done = [r for r in rows if r["finished"] and r["valid"] and r["objective"] is not None
            and not math.isnan(r["objective"])]
    if not done:
        raise RuntimeError(f"tune: no trial finished (see {tcfg.out}/{EXPERIMENT} for their errors)")
    best = max(done, key=lambda r: r["objective"])
    if tcfg.objective == "label_free":  # measured, not assumed: README "Tuning the thresholds"
        log.warning("tune: the label-free objective is not yet shown to rank settings by quality (README: "
                    "Tuning the thresholds); check best.yaml against the defaults on a labelled folder "
                    "(tune.objective=val_miou tune.val=DIR) before you rely on it")
    storage.write_text(storage.join(tcfg.out, "best.yaml"), _yaml(tuning.best_config(user_config, best["config"])))
    storage.write_json(storage.join(tcfg.out, "trials.json"), rows)
    summary = {"best": best["config"], "best_objective": best["objective"], "best_model": best["model"],
               "objective": tcfg.objective, "trials": len(rows), "finished": len(done),
               "stopped_early": sum(1 for r in rows if r["valid"] and not r["finished"] and not r["error"]),
               "failed": sum(1 for r in rows if r["error"]), "best_yaml": storage.join(tcfg.out, "best.yaml")}
    tracker.log_metrics({"best_objective": best["objective"], "trials": len(rows), "finished": len(done)})
    tracker.log_json("trials.json", rows)
    tracker.log_text("best.yaml", storage.read_text(summary["best_yaml"]))
    if tcfg.promote and cfg.registered_model:
        summary["registered_model"] = tracker.register(cfg.registered_model, best["model"], None)
        promote(tracker.uri, cfg.registered_model, summary["registered_model"].rsplit("/", 1)[1], CHAMPION)
    tracker.end("FINISHED")
    return summary


def _yaml(data: dict) -> str:
    import yaml

    return "# inetseg tune: the best trial's values over the tuned config\n" + yaml.safe_dump(data, sort_keys=False)
