"""One tuning trial: the pipeline's stages from the first tuned one, in folders keyed by the trial's values (shared
with every trial that agrees so far), scored by the label-free objective on the validation images (or val_miou).
Reports to Ray Tune after the first segmenter and when finished, so ASHA can stop a poor trial before fine-tuning."""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import fcntl
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import ray

from inetseg import config as C
from inetseg import crf as dense
from inetseg import finetune, imaging, pipeline, registry, shards, storage, tuning
from inetseg.inference import predict_probs, tag_probability
from inetseg.models.io import load_model
from inetseg.stages.common import actor_device, actor_pool, filter_ids, usable_images

log = logging.getLogger("inetseg")

# Stages that score a run on labelled images: a trial never runs them on the test split (val_miou runs predict,
# crf and evaluate on the validation folder instead).
SCORING = ("testset", "predict", "crf", "evaluate")


@dataclasses.dataclass
class Plan:
    """What every trial needs from the driver: the tuned run's config with its shared stages done, and where to go."""

    base: Any  # PipelineConfig, resolved; stages before `first` finished
    classes: list[str]
    order: list[str]  # the pipeline's stage names, in order (this run may lack some)
    first: str  # the earliest stage a tuned key changes
    root: str  # <tune out>/stages: a folder per (stage, content key)
    objective: str  # label_free | val_miou
    val_table: str  # label_free: split's val/ IMAGES table; val_miou: the validation folder's test table
    val_images: int
    reports: int  # how many times a trial reports (ASHA's max_t)


class Evidence:
    """Actor: the segmenter's object region of each validation image (Eqn 11, after the CRF when given) and the
    classifier's P(tag) of the region and of the rest -> the terms of tuning.evidence_score."""

    def __init__(self, segmenter_dir: str, classifier_dir: str, crf: C.CRFParams | None, compute: C.ComputeConfig):
        self.device = actor_device(compute)
        self.segmenter, smeta = load_model(segmenter_dir, self.device, "segmenter")
        self.classifier, cmeta = load_model(classifier_dir, self.device, "classifier")
        self.input_size, self.classifier_input_size = int(smeta["input_size"]), int(cmeta["input_size"])
        self.crf = crf

    def p_tag(self, images: list[np.ndarray], labels: np.ndarray) -> np.ndarray:
        return tag_probability(self.classifier, images, labels, self.classifier_input_size, self.device)

    def __call__(self, batch: dict) -> dict:
        images = [imaging.decode_rgb(b) for b in batch["image"]]
        labels = np.asarray(batch["label"], dtype=np.int64)
        probs = predict_probs(self.segmenter, images, self.input_size, self.device)
        if self.crf is not None:
            probs = [dense.dense_crf(im, p, self.crf) for im, p in zip(images, probs)]
        regions = [finetune.object_region(p, int(lab)) for p, lab in zip(probs, labels)]
        return {"p_in": self.p_tag([finetune.masked_image(im, m) for im, m in zip(images, regions)], labels),
                "p_out": self.p_tag([finetune.masked_image(im, ~m) for im, m in zip(images, regions)], labels),
                "area": np.array([m.mean() for m in regions], dtype=np.float64)}


def label_free(cfg: Any, plan: Plan, model: str) -> dict:
    """tuning.evidence_score of `model` on (a fixed hash subset of at most val_images of) the validation images."""
    ids = shards.read_table(plan.val_table, columns=["id"]).column("id").to_pylist()
    ds = usable_images(plan.val_table, "validation images", ["id", "label", "image"])
    if len(ids) > plan.val_images:  # the same subset for every trial: a salted id hash, as the split draws
        chosen = [i for i, k in zip(ids, finetune.held_out(ids, plan.val_images / len(ids), salt="tune")) if k]
        ds = ds.map_batches(filter_ids, batch_format="pyarrow",
                            fn_kwargs={"ids": pa.array(chosen, pa.string()), "keep": True})
    crf = C.subset(C.CRFParams, cfg.crf) if cfg.crf.enabled else None
    terms = ds.map_batches(Evidence, batch_format="numpy", fn_constructor_kwargs={
        "segmenter_dir": model, "classifier_dir": cfg.classifier.out, "crf": crf,
        "compute": cfg.predict.compute}, **actor_pool(cfg.predict.compute)).to_pandas()
    return {"objective": tuning.evidence_score(terms["p_in"], terms["p_out"], terms["area"]),
            "p_in": float(terms["p_in"].mean()), "p_out": float(terms["p_out"].mean()),
            "area": float(terms["area"].mean()), "val_images": len(terms)}


def val_miou(cfg: Any, plan: Plan, model: str) -> dict:
    """mIoU of `model` (and the CRF when the run has it) on the labelled validation folder's table."""
    cfg = copy.deepcopy(cfg)
    key = C.fingerprint({"model": model, "crf": C.to_dict(cfg.crf) if cfg.crf.enabled else None})
    at = storage.join(plan.root, "val_scores", key)
    cfg.predict.test, cfg.predict.model, cfg.predict.out = plan.val_table, model, storage.join(at, "predictions")
    cfg.crf.predictions, cfg.crf.out = cfg.predict.out, storage.join(at, "crf")
    cfg.evaluate.predictions = cfg.crf.out if cfg.crf.enabled else cfg.predict.out
    cfg.evaluate.before_crf, cfg.evaluate.out = (cfg.predict.out if cfg.crf.enabled else ""), storage.join(at, "eval")
    for name in ("predict", "crf", "evaluate"):
        if name != "crf" or cfg.crf.enabled:
            result = pipeline.run_one(cfg, registry.get(name), plan.classes)
    return {"objective": result["miou"], "val_miou": result["miou"]}


def relocate(cfg: Any, names: set[str], out_of: Callable[[Any], str]) -> Any:
    """`cfg` with stages `names` writing to out_of(stage), and every input one of them makes found there."""
    for stage in registry.REGISTRY.pipeline:
        scfg = getattr(cfg, stage.name)
        if stage.name in names:
            scfg.out = out_of(stage)
        for key, ref in stage.inputs.items():
            if any(p.partition(".")[0] in names for p in ref.products):
                setattr(scfg, key, "")
    return registry.resolve(cfg)


def trial_config(params: dict, plan: Plan) -> Any:
    """The trial's run config: its values applied, and every stage from `first` on in <root>/<folder>/<key>."""
    cfg = tuning.apply(plan.base, params)
    mine = set(plan.order[plan.order.index(plan.first):])
    return relocate(cfg, mine, lambda s: storage.join(plan.root, s.folder, tuning.stage_key(s.name, params,
                                                                                            plan.order)))


@contextlib.contextmanager
def locked(path: str) -> Iterator[None]:
    """One trial at a time in a stage folder two trials share (local folders; a URI out is not locked)."""
    if storage.is_uri(path):
        yield
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def score(cfg: Any, plan: Plan, model: str) -> dict:
    """The trial's objective for `model`, as the search was configured."""
    return val_miou(cfg, plan, model) if plan.objective == "val_miou" else label_free(cfg, plan, model)


def steps(params: dict, plan: Plan, part: int) -> dict:
    """Part 1: the trial's stages up to its first segmenter (all of them when it reports once), scored; part 2:
    the rest (fine-tuning), scored. Values the pipeline refuses score tuning.INVALID."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars, ctx.print_on_execution_start = False, False  # one line per trial, by the driver
    try:  # values the pipeline refuses, or a stage that finds them unusable (fine-tuning keeps no image)
        cfg = trial_config(params, plan)
        at = plan.order.index
        mine = [s for s in registry.stages_of(cfg) if at(s.name) >= at(plan.first) and s.name not in SCORING]
        first_part = [s for s in mine if plan.reports == 1 or at(s.name) <= at("segmenter")]
        for stage in first_part if part == 1 else [s for s in mine if s not in first_part]:
            with locked(getattr(cfg, stage.name).out):
                pipeline.run_one(cfg, stage, plan.classes)
    except C.ConfigError as e:
        return {"objective": tuning.INVALID, "valid": 0, "stage": "final", "error": str(e)}
    if part == 1 and plan.reports > 1:
        return {**score(cfg, plan, cfg.segmenter.out), "valid": 1, "stage": "segmenter"}
    return {**score(cfg, plan, cfg.predict.model), "valid": 1, "stage": "final", "model": cfg.predict.model}


def trial(params: dict, plan: Plan) -> None:
    """Ray Tune function trainable: report after the first segmenter (when fine-tuning follows) and at the end.

    The work runs in a task outside the trial's placement group: Tune places a trial's child tasks in the trial's
    own bundle, where the stages' Ray Data and Ray Train work (1 CPU per task) would wait forever."""
    from ray import tune
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    task = ray.remote(steps).options(num_cpus=0, max_retries=0,
                                     scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=None))
    for part in (1, 2) if plan.reports > 1 else (1,):
        result = ray.get(task.remote(params, plan, part))
        tune.report(result)
        if not result["valid"]:
            return
