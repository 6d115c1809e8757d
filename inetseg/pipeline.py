"""The whole run: the registry's stages in order (corpus -> ingest -> filter -> classifier -> attention ->
segmenter -> predict -> CRF -> mIoU), tracked in MLflow, summarised in summary.json."""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from inetseg import config as C
from inetseg import registry, storage
from inetseg.registry import PipelineConfig

log = logging.getLogger("inetseg")

def load_config(preset: str = "demo", config_file: str | None = None,
                overrides: list[str] | None = None, resolve: bool = True) -> PipelineConfig:
    """preset <- YAML file <- key=value overrides, validated, with every path resolved (unless resolve=False)."""
    from inetseg.presets import PRESETS, SYNTH_PRESETS

    if preset not in PRESETS:
        raise C.ConfigError(f"unknown preset '{preset}' (choose from {', '.join(PRESETS)})")
    data = dict(PRESETS[preset])
    if config_file:
        data = C.deep_merge(data, C.read_yaml(config_file))
    data = C.deep_merge(data, C.parse_overrides(overrides or []))
    cfg = C.from_dict(registry.REGISTRY.run_config, data)
    if not cfg.source:
        raise C.ConfigError(f"preset '{preset}' needs a real source: source=DIR (a folder per tag, a crawl "
                            "folder or its manifest.parquet), and test=DIR to score the run")
    if cfg.source == "synth" and preset not in SYNTH_PRESETS:
        # The synthetic corpus renders image by image on the driver: fine for the demo's 1500, not for
        # a crawl-sized run.
        raise C.ConfigError(f"preset '{preset}' is for real photos: give source=DIR (a folder per tag, a "
                            "crawl folder or manifest.parquet); the synthetic corpus is for --preset demo")
    return registry.resolve(cfg) if resolve else cfg


def check_sources(cfg: PipelineConfig) -> list[str]:
    """Fail before any training on a real source the run cannot use; returns the run's classes.

    The source must list its classes (folder per tag, or a crawl manifest); a test folder, when given,
    must hold image/mask pairs and a classes.json whose names are the run's classes in the same order
    (mask ids 1..K are positions in that list, so a different order would score the wrong classes).
    """
    from inetseg import evalsets
    from inetseg.ingest.listing import list_source, test_items

    _, classes = list_source(cfg.ingest.source, list(cfg.ingest.classes))
    if not cfg.test:
        log.warning("no test set (test=DIR): the run goes as far as the segmenter and scores nothing; "
                    "segment photos afterwards with `inetseg segment model=%s images=DIR out=DIR`",
                    cfg.segmenter.out)
        return classes
    test_items(cfg.test)  # raises on a missing folder or no image/mask pairs
    listed = storage.join(cfg.test, "classes.json")
    if not storage.exists(listed):
        raise FileNotFoundError(f"test folder {cfg.test} has no classes.json naming its mask ids "
                                f"(expected {json.dumps(classes)})")
    test_classes = evalsets.parse_classes(listed)
    if test_classes != classes:
        raise C.ConfigError(f"test folder classes {test_classes} differ from the source's classes {classes}; "
                            "set ingest.classes=... in the test folder's order, or fix its classes.json")
    return classes


class _Timer:
    """Seconds per stage, in the order they ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        log.info("=== stage %s ===", name)
        t0 = time.time()
        result = fn()
        self.seconds[name] = round(time.time() - t0, 2)
        log.info("=== stage %s done in %.1fs ===", name, self.seconds[name])
        return result


def run_one(cfg: PipelineConfig, stage: registry.Stage, classes: list[str]) -> dict:
    """One stage of a run: its section of the config, given the run's classes (from the first stage that
    named them) when it has a `classes` key left empty."""
    scfg = getattr(cfg, stage.name)
    if classes and hasattr(scfg, "classes") and not scfg.classes:
        scfg.classes = list(classes)
    return stage.function()(scfg, cfg.resume)


def run(cfg: PipelineConfig) -> dict:
    """Run the registry's stages in order under Ray, each in its own MLflow nested run; writes and returns
    <out>/summary.json. One run per out at a time (storage.BusyError for a second)."""
    if cfg.source != "synth":
        check_sources(cfg)  # before the run starts: a bad source or test folder costs no training
    with contextlib.ExitStack() as held:
        try:
            storage.makedirs(cfg.out)
            held.enter_context(storage.exclusive(cfg.out))  # before anything is written into it
            storage.write_text(storage.join(cfg.out, "config.yaml"), C.dump_yaml(cfg))
        except OSError as e:  # an unwritable or full out: one line before any work
            raise C.ConfigError(f"out={cfg.out} is not writable: {e.strerror or e}") from None
        return _run(cfg)


def _run(cfg: PipelineConfig) -> dict:
    from inetseg.stages.common import ensure_ray
    from inetseg.tracking import Tracker

    local_out = cfg.out if not storage.is_uri(cfg.out) else os.path.abspath("inetseg-mlflow")
    tracker = Tracker(cfg.mlflow_uri or Tracker.default_uri(local_out), cfg.experiment)
    run_id = tracker.start_parent(cfg.run_name or f"inetseg-{time.strftime('%Y%m%d-%H%M%S')}",
                                  C.flatten(C.to_dict(cfg)))
    timer, counts, results, audits = _Timer(), {}, {}, {}
    classes: list[str] = []
    truth: Any = None  # the hidden truth's object ref, read once by a task when a stage audits
    try:
        ensure_ray(cfg.ray_address, cfg.num_cpus)
        for stage in registry.stages_of(cfg):
            scfg = getattr(cfg, stage.name)
            with tracker.stage(stage.name, C.flatten(C.to_dict(scfg))) as st:
                meta = timer.run(stage.name, functools.partial(run_one, cfg, stage, classes))
                for metrics, step in stage.metrics(meta):
                    st.log_metrics(metrics, step=step)
                st.log_json("summary.json", meta)
                if stage.model_kind:  # the net it exported, as an MLflow model of its run
                    tracker.log_model(st, stage.model_dir(scfg), stage.model_kind)
                classes = classes or list(meta.get("classes") or [])
                audit = stage.auditor() if cfg.source == "synth" else None
                if audit is not None:  # measurement only: the hidden truth never feeds a stage
                    truth = truth if truth is not None else _truth(cfg)
                    audits[stage.name] = audit(scfg, meta, truth, classes)
                    for name, q in audits[stage.name].items():
                        st.log_metrics({f"{name}_{k}": q[k] for k in ("miou", "precision", "ignored")})
            counts.update(stage.counts(meta))
            results[stage.name] = meta
        if "evaluate" not in results:
            return _finish(cfg, tracker, build_summary(None, None, None, counts, timer.seconds, run_id, classes), None)
        summary, grid = _score(cfg, results["evaluate"], counts, timer.seconds, run_id, classes, audits, truth)
        return _finish(cfg, tracker, summary, grid)
    except BaseException:
        tracker.end("FAILED")
        raise


def _truth(cfg: PipelineConfig) -> Any:
    from inetseg.stages import audit

    return audit.truth_ref(cfg.synth.out)


def _score(cfg: PipelineConfig, result: dict, counts: dict, seconds: dict, run_id: str,
           classes: list[str], audits: dict, truth: Any) -> tuple[dict, bytes]:
    """The summary of a scored run and its picture grid (with the synthetic corpus's hidden-truth audits)."""
    from inetseg import report
    from inetseg.stages import audit

    pseudo_q = filter_q = None
    if cfg.source == "synth":  # measurement only: the hidden truth never feeds a stage
        pseudo_q = audits.get("attention", {}).get("pseudo")
        # what the filter kept: the split's input with fine-tuning on (the classifier then reads its train cut)
        filter_q = audit.filter_quality(cfg.filter.images, cfg.split.images or cfg.classifier.images,
                                        truth if truth is not None else _truth(cfg))
    grid = report.grid_png(cfg, classes, cfg.evaluate.grid_images)
    storage.write_bytes(storage.join(cfg.out, "grid.png"), grid)
    summary = build_summary(result, pseudo_q, filter_q, counts, seconds, run_id, classes)
    if "finetune" in audits:  # each round's new pseudo labels, beside the attention's
        summary["finetune_pseudo_miou"] = {r: q["miou"] for r, q in audits["finetune"].items()}
    return summary, grid


def _finish(cfg: PipelineConfig, tracker: Any, summary: dict, grid: bytes | None) -> dict:
    """Register the run's final segmenter; write summary.json and close the parent MLflow run with the summary,
    config and picture."""
    # The segmenter predictions come from (the fine-tuned one when fine-tuning ran), as a new registered version.
    summary["registered_model"] = (tracker.register(cfg.registered_model, cfg.predict.model, summary["miou"])
                                   if cfg.registered_model else None)
    storage.write_json(storage.join(cfg.out, "summary.json"), summary)
    tracker.log_metrics({k: v for k, v in summary.items() if isinstance(v, (int, float)) and v is not None})
    tracker.log_json("summary.json", summary)
    if grid is not None:
        tracker.log_artifact_bytes("grid.png", grid)
    tracker.log_text("config.yaml", C.dump_yaml(cfg))
    tracker.end("FINISHED")
    return summary


def build_summary(result: dict | None, pseudo_q: dict | None, filter_q: dict | None, counts: dict,
                  seconds: dict, run_id: str, classes: list[str]) -> dict:
    """The summary.json users and CI read; `result` None = no test set, nothing scored."""
    if result is None:
        result = {"miou": None, "per_class_iou": {}, "pixel_accuracy": None, "baseline": {"miou": None}}
    return {
        "miou": result["miou"],
        "per_class_iou": result["per_class_iou"],
        "pixel_accuracy": result["pixel_accuracy"],
        "miou_no_crf": (result.get("before_crf") or {}).get("miou"),
        "baseline_miou": result["baseline"]["miou"],
        "pseudo_label_miou": pseudo_q["miou"] if pseudo_q else None,
        "pseudo_label_precision": pseudo_q["precision"] if pseudo_q else None,
        "pseudo_label_ignored": pseudo_q["ignored"] if pseudo_q else None,
        "filter_quality": filter_q,
        "counts": counts,
        "seconds": seconds,
        "total_seconds": round(sum(seconds.values()), 2),
        "classes": classes,
        "mlflow_run_id": run_id,
    }


def format_table(summary: dict) -> str:
    """A short human table of the run's headline numbers."""
    def pct(v: float | None) -> str:
        return "   n/a" if v is None else f"{100 * v:6.1f}"

    lines = ["", "inetseg run summary", "-" * 44]
    if summary["miou"] is None:
        lines.append("nothing scored: the run had no test set (test=DIR)")
    lines += [f"{'mIoU (CRF)':<28}{pct(summary['miou'])} %",
              f"{'mIoU (no CRF)':<28}{pct(summary['miou_no_crf'])} %",
              f"{'all-background baseline':<28}{pct(summary['baseline_miou'])} %",
              f"{'pseudo-label mIoU':<28}{pct(summary['pseudo_label_miou'])} %"]
    for rnd, miou in (summary.get("finetune_pseudo_miou") or {}).items():
        lines.append(f"{'  fine-tuning ' + rnd:<28}{pct(miou)} %")
    lines.append("-" * 44)
    for name, iou in summary["per_class_iou"].items():
        lines.append(f"  {name:<26}{pct(iou)} %")
    lines.append("-" * 44)
    for k, v in summary["counts"].items():
        lines.append(f"  {k:<26}{v:>7}")
    lines.append("-" * 44)
    for k, v in summary["seconds"].items():
        lines.append(f"  {k + ' (s)':<26}{v:>7.1f}")
    lines.append(f"  {'total (s)':<26}{summary['total_seconds']:>7.1f}")
    lines.append(f"MLflow run: {summary['mlflow_run_id']}")
    if summary.get("registered_model"):
        lines.append(f"registered model: {summary['registered_model']}")
    return "\n".join(lines)
