"""Running Table 1's rows through the stage registry: the run config of one seed, the stages every row
shares (corpus to classifier), and per row a copy of that config whose row stages (attention and all after
it) write under <run>/ablation/[<name>/]<row>/, so the pipeline's own folders are never overwritten and a
re-run reuses every finished row stage (each resumes by its fingerprint).
"""
from __future__ import annotations

import copy
import time
from typing import Any

from inetseg import pipeline, registry, shards, storage
from inetseg.registry import PipelineConfig
from inetseg.stages import audit as truth_audit
from jobs.ablation_table import Row, stage_owners

# --fast: the whole table in minutes on 2 CPU cores (tests/conftest.py's TINY without filter rounds, plus
# fine-tuning at the same size); most of it is Ray Train starting a worker group per net (8 nets).
# split.share: enough held-out images to fine-tune on; finetune.mu=0: keep them all (a 2-epoch classifier
# names no tag with P > 0.4). Fine-tuning follows the segmenter's recorded schedule (64 px, 1 epoch, batch 8).
FAST = [
    "synth.num_classes=3", "synth.images_per_class=24", "synth.test_images=8", "synth.image_size=64",
    "ingest.max_side=64", "ingest.rows_per_shard=50",
    "classifier.width=0.25", "classifier.input_size=64", "classifier.epochs=2", "classifier.batch_size=16",
    "classifier.holdout_fraction=0.1",
    "filter.rounds=0", "classifier_from_filter=false",  # one net fewer (tests/test_filter_rounds.py runs rounds)
    "attention.input_size=64",
    "segmenter.input_size=64", "segmenter.epochs=1", "segmenter.batch_size=8",
    "predict.input_size=64", "crf.iterations=3",
    "split.share=0.3", "finetune.mu=0.0",
]


def row_stages() -> list[str]:
    """The stages a row runs or borrows, in data-flow order: attention and every pipeline stage after it."""
    names = [s.name for s in registry.REGISTRY.pipeline]
    return names[names.index("attention"):]


def fast_overrides() -> list[str]:
    return list(FAST)


def seed_dir(run: str, seed: int) -> str:
    """Seed 0 runs in <run> itself, seed s in <run>/seed<s>."""
    return storage.absolute(run if seed == 0 else storage.join(run, f"seed{seed}"))


def load_base(preset: str, config_file: str | None, overrides: list[str], run: str, seed: int) -> PipelineConfig:
    """One seed's run config, fine-tuning on: every row's classifier, attention and segmenter train on
    split/train, and online fine-tuning has its held-out share. When the run's own config has fine-tuning
    off, its classifier trained on every filtered image: the ablation's goes to <seed dir>/ablation/classifier,
    leaving the pipeline's own in place."""
    out = seed_dir(run, seed)
    cfg = pipeline.load_config(preset, config_file, [*overrides, f"out={out}", f"seed={seed}"], resolve=False)
    if not cfg.finetune.enabled and not cfg.classifier.out:
        cfg.classifier.out = storage.join(out, "ablation", "classifier")
    cfg.finetune.enabled = True
    return registry.resolve(cfg)


def shared_stages(cfg: PipelineConfig) -> list[str]:
    """Run (or reuse) the stages before the row stages (corpus, ingest, test set, filter, split, classifier);
    returns the run's classes."""
    if cfg.source != "synth":
        pipeline.check_sources(cfg)  # a bad source or test folder costs no training
    rows = set(row_stages())
    classes: list[str] = []
    for stage in registry.stages_of(cfg):
        if stage.name not in rows:
            meta = pipeline.run_one(cfg, stage, classes)
            classes = classes or list(meta.get("classes") or [])
    return classes


def row_config(base: PipelineConfig, row: Row, root: str) -> PipelineConfig:
    """A copy of the seed's run config for `row`: its attention settings, fine-tuning and CRF on or off, each
    row stage's out in the folder of the row that owns it (root/<owner>/<stage folder>), and every input that
    another row stage makes left for the registry to fill from those outs."""
    cfg = copy.deepcopy(base)
    for key, value in row.attention.items():
        setattr(cfg.attention, key, value)
    cfg.finetune.enabled, cfg.crf.enabled = row.finetune, row.crf
    stages = row_stages()
    owners = stage_owners(row, stages)
    for name in stages:
        stage = registry.get(name)
        scfg = getattr(cfg, name)
        scfg.out = storage.join(root, owners[name], stage.folder)
        for key, ref in stage.inputs.items():
            if any(p.partition(".")[0] in stages for p in ref.products):
                setattr(scfg, key, "")
    return registry.resolve(cfg)


def owned_stages(row: Row) -> set[str]:
    return {s for s, owner in stage_owners(row, row_stages()).items() if owner == row.name}


def run_row(cfg: PipelineConfig, row: Row, classes: list[str], truth: dict, st: Any) -> dict:
    """Run (or reuse) the row's own stages in order, logging each stage's metrics into the row's MLflow run
    `st`; returns the row's entry: test mIoU, and what applies of pseudo-label quality, fine-tuning, CRF."""
    t0, mine, results, seconds = time.time(), owned_stages(row), {}, {}
    for stage in registry.stages_of(cfg):
        if stage.name in mine:
            t1 = time.time()
            meta = pipeline.run_one(cfg, stage, classes)
            seconds[stage.name] = round(time.time() - t1, 1)
            for metrics, step in stage.metrics(meta):
                st.log_metrics({f"{stage.name}.{k}": v for k, v in metrics.items()}, step=step)
            results[stage.name] = meta
    ev = results["evaluate"]
    entry: dict = {"miou": ev["miou"], "per_class_iou": ev["per_class_iou"],
                   "test_images": shards.count_rows(cfg.evaluate.predictions),
                   "predictions": cfg.evaluate.predictions, "segmenter": cfg.predict.model}
    if ev.get("before_crf"):
        entry["miou_no_crf"] = ev["before_crf"]["miou"]
    if "attention" in results:  # measurement only: the truth never reaches a stage
        q = truth_audit.pseudo_label_quality(cfg.attention.out, truth, classes)
        entry.update({"pseudo_miou": q["miou"], "precision": q["precision"], "ignored": q["ignored"],
                      "pseudo_images": q["images"], "pseudo_per_class_iou": q["per_class_iou"],
                      "pseudo": cfg.attention.out})
    if "finetune" in results:
        last = results["finetune"]["rounds"][-1]
        entry["finetune"] = {"images": last["images"], "kept": last["kept"],
                             "rounds": len(results["finetune"]["rounds"])}
    entry["reused"] = all(m.get("reused") for m in results.values())
    entry["seconds"], entry["stage_seconds"] = time.time() - t0, seconds
    return entry


def row_params(row: Row, cfg: PipelineConfig, seed: int) -> dict:
    """The row's MLflow params: its settings, seed and the folders it wrote."""
    return {"seed": seed, "what": row.what, "base": row.base or "-", "finetune": row.finetune, "crf": row.crf,
            **{f"attention.{k}": v for k, v in row.attention.items()},
            **{f"{s}.out": getattr(cfg, s).out for s in sorted(owned_stages(row))}}
