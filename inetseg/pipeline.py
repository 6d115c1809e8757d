"""The whole run: corpus -> ingest -> filter rounds -> classifier -> attention -> segmenter -> predict -> CRF -> mIoU."""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Callable

from inetseg import config as C
from inetseg import storage

log = logging.getLogger("inetseg")

STAGES = ("synth", "ingest", "filter", "classifier", "attention", "segmenter", "predict", "crf", "evaluate")


def resolve_paths(cfg: C.PipelineConfig) -> C.PipelineConfig:
    """Fill every empty stage path from cfg.out, so stages chain through one output root."""
    out = storage.absolute(cfg.out)
    cfg.out = out
    for stage in (cfg.synth, cfg.classifier, cfg.filter.train, cfg.segmenter):
        stage.seed = stage.seed or cfg.seed
    j = lambda *p: storage.join(out, *p)  # noqa: E731 - a local shorthand
    corpus = cfg.synth.out or j("corpus")
    cfg.synth.out = corpus
    if cfg.source == "synth":
        cfg.ingest.source = cfg.ingest.source or storage.join(corpus, "search")
        cfg.test = cfg.test or storage.join(corpus, "test")
    else:
        cfg.ingest.source = cfg.ingest.source or cfg.source
    cfg.ingest.out = cfg.ingest.out or j("images")
    cfg.filter.images = cfg.filter.images or cfg.ingest.out
    cfg.filter.out = cfg.filter.out or j("filter")
    # The paper's order: filter rounds (each with its own classifier), then the final classifier on what
    # survived; its attention makes the pseudo labels.
    filtered = storage.join(cfg.filter.out, f"round{cfg.filter.rounds}", "images") if cfg.filter.rounds \
        else cfg.filter.images
    cfg.classifier.images = cfg.classifier.images or filtered
    cfg.classifier.out = cfg.classifier.out or j("classifier")
    if cfg.classifier_from_filter and not cfg.classifier.init_from:
        cfg.classifier.init_from = storage.join(cfg.filter.out, f"round{cfg.filter.rounds}", "classifier")
    cfg.attention.images = cfg.attention.images or filtered
    cfg.attention.model = cfg.attention.model or cfg.classifier.out
    cfg.attention.out = cfg.attention.out or j("pseudo")
    cfg.segmenter.pseudo = cfg.segmenter.pseudo or cfg.attention.out
    cfg.segmenter.model = cfg.segmenter.model or cfg.classifier.out
    cfg.segmenter.out = cfg.segmenter.out or j("segmenter")
    cfg.predict.test = cfg.predict.test or j("test")
    cfg.predict.model = cfg.predict.model or cfg.segmenter.out
    cfg.predict.out = cfg.predict.out or j("predictions")
    cfg.crf.predictions = cfg.crf.predictions or cfg.predict.out
    cfg.crf.out = cfg.crf.out or j("crf")
    cfg.evaluate.predictions = cfg.evaluate.predictions or (cfg.crf.out if cfg.crf.enabled else cfg.predict.out)
    cfg.evaluate.out = cfg.evaluate.out or j("eval")
    return cfg


def load_config(preset: str = "demo", config_file: str | None = None,
                overrides: list[str] | None = None) -> C.PipelineConfig:
    """preset <- YAML file <- key=value overrides, validated, with every path resolved."""
    from inetseg.presets import PRESETS, SYNTH_PRESETS

    if preset not in PRESETS:
        raise C.ConfigError(f"unknown preset '{preset}' (choose from {', '.join(PRESETS)})")
    data = dict(PRESETS[preset])
    if config_file:
        data = C.deep_merge(data, C.read_yaml(config_file))
    data = C.deep_merge(data, C.parse_overrides(overrides or []))
    cfg = C.from_dict(C.PipelineConfig, data)
    if not cfg.source:
        raise C.ConfigError(f"preset '{preset}' needs a real source: source=DIR (a folder per tag, a crawl "
                            "folder or its manifest.parquet), and test=DIR to score the run")
    if cfg.source == "synth" and preset not in SYNTH_PRESETS:
        # The synthetic corpus renders image by image on the driver: fine for the demo's 1500, not for
        # a crawl-sized run.
        raise C.ConfigError(f"preset '{preset}' is for real photos: give source=DIR (a folder per tag, a "
                            "crawl folder or manifest.parquet); the synthetic corpus is for --preset demo")
    return resolve_paths(cfg)


def check_sources(cfg: C.PipelineConfig) -> list[str]:
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


def run(cfg: C.PipelineConfig) -> dict:
    """Run every stage under Ray with MLflow tracking; writes and returns <out>/summary.json."""
    from inetseg import audit, report
    from inetseg.sources import synth
    from inetseg.stages import attention, classifier, common, crf, evaluate, filter, ingest, predict, segmenter, testset
    from inetseg.tracking import Tracker

    if cfg.source != "synth":
        check_sources(cfg)  # before the run starts: a bad source or test folder costs no training
    storage.makedirs(cfg.out)
    storage.write_text(storage.join(cfg.out, "config.yaml"), C.dump_yaml(cfg))
    local_out = cfg.out if not storage.is_uri(cfg.out) else os.path.abspath("inetseg-mlflow")
    tracker = Tracker(cfg.mlflow_uri or Tracker.default_uri(local_out), cfg.experiment)
    run_id = tracker.start_parent(cfg.run_name or f"inetseg-{time.strftime('%Y%m%d-%H%M%S')}",
                                  C.flatten(C.to_dict(cfg)))
    timer, counts, summary = _Timer(), {}, {}
    try:
        common.ensure_ray(cfg.ray_address, cfg.num_cpus)
        if cfg.source == "synth":
            with tracker.stage("synth", C.flatten(C.to_dict(cfg.synth))) as st:
                meta = timer.run("synth", lambda: synth.generate(cfg.synth, cfg.synth.out))
                st.log_json("summary.json", meta)
            classes = storage.read_json(storage.join(cfg.synth.out, "classes.json"))["classes"]
            cfg.ingest.classes = cfg.ingest.classes or classes
        with tracker.stage("ingest", C.flatten(C.to_dict(cfg.ingest))) as st:
            meta = timer.run("ingest", lambda: ingest.run(cfg.ingest, cfg.resume))
            classes = meta["classes"]
            if cfg.test:
                testset.run(testset.TestSetConfig(test=cfg.test, out=cfg.predict.test, classes=classes), cfg.resume)
            counts["ingested"], counts["ingest_failed"] = meta["ok"], meta["total"] - meta["ok"]
            st.log_metrics({"ok": meta["ok"], "total": meta["total"]})
            st.log_json("summary.json", meta)
        with tracker.stage("filter", C.flatten(C.to_dict(cfg.filter))) as st:
            meta = timer.run("filter", lambda: filter.run(cfg.filter, cfg.resume))
            counts["filtered"] = meta["kept"]
            st.log_metrics({"in": meta["in"], "kept": meta["kept"], "dropped": meta["dropped"]})
            for rnd in meta["rounds"]:  # each round's counts, overall and per tag, as a step series
                st.log_metrics({"round_in": rnd["in"], "round_kept": rnd["kept"], "round_dropped": rnd["dropped"],
                                **{f"kept_{t}": c["kept"] for t, c in rnd["per_tag"].items()},
                                **{f"in_{t}": c["in"] for t, c in rnd["per_tag"].items()}}, step=rnd["round"])
            st.log_json("summary.json", meta)
        with tracker.stage("classifier", C.flatten(C.to_dict(cfg.classifier))) as st:
            meta = timer.run("classifier", lambda: classifier.run(cfg.classifier, cfg.resume))
            for i, row in enumerate(meta.get("history", [])):
                st.log_metrics({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=i)
            st.log_json("summary.json", meta)
        with tracker.stage("attention", C.flatten(C.to_dict(cfg.attention))) as st:
            meta = timer.run("attention", lambda: attention.run(cfg.attention, cfg.resume))
            counts["pseudo_labelled"] = meta["images"]
            st.log_metrics({k: meta[k] for k in ("images", "mean_ignored", "mean_foreground")})
            st.log_json("summary.json", meta)
        with tracker.stage("segmenter", C.flatten(C.to_dict(cfg.segmenter))) as st:
            meta = timer.run("segmenter", lambda: segmenter.run(cfg.segmenter, cfg.resume))
            for i, row in enumerate(meta.get("history", [])):
                st.log_metrics({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=i)
            st.log_json("summary.json", meta)
        if not cfg.test:
            summary = build_summary(None, None, None, counts, timer.seconds, run_id, classes)
            return _finish(cfg, tracker, summary, None)
        with tracker.stage("predict", C.flatten(C.to_dict(cfg.predict))) as st:
            meta = timer.run("predict", lambda: predict.run(cfg.predict, cfg.resume))
            counts["test_images"] = meta["images"]
            st.log_json("summary.json", meta)
        if cfg.crf.enabled:
            with tracker.stage("crf", C.flatten(C.to_dict(cfg.crf))) as st:
                meta = timer.run("crf", lambda: crf.run(cfg.crf, cfg.resume))
                st.log_json("summary.json", meta)
        with tracker.stage("evaluate", C.flatten(C.to_dict(cfg.evaluate))) as st:
            extra = {"no_crf": cfg.predict.out} if cfg.crf.enabled else {}
            result = timer.run("evaluate", lambda: evaluate.run(cfg.evaluate, classes, cfg.resume, extra))
            pseudo_q = filter_q = None
            if cfg.source == "synth":  # measurement only: the hidden truth never feeds a stage
                truth = audit.load_truth(cfg.synth.out)
                pseudo_q = audit.pseudo_label_quality(cfg.attention.out, truth, classes)
                filter_q = audit.filter_quality(cfg.filter.images, cfg.classifier.images, truth)
            grid = report.grid_png(cfg, classes, cfg.evaluate.grid_images)
            st.log_artifact_bytes("grid.png", grid)
            storage.write_bytes(storage.join(cfg.out, "grid.png"), grid)
            summary = build_summary(result, pseudo_q, filter_q, counts, timer.seconds, run_id, classes)
            st.log_metrics({"miou": summary["miou"], "baseline_miou": summary["baseline_miou"]})
        return _finish(cfg, tracker, summary, grid)
    except BaseException:
        tracker.end("FAILED")
        raise


def _finish(cfg: C.PipelineConfig, tracker: Any, summary: dict, grid: bytes | None) -> dict:
    """Write summary.json and close the parent MLflow run with the summary, config and picture."""
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
        "miou_no_crf": result.get("no_crf", {}).get("miou"),
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
              f"{'pseudo-label mIoU':<28}{pct(summary['pseudo_label_miou'])} %", "-" * 44]
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
    return "\n".join(lines)
