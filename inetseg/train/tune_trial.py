"""One tuning trial: the pipeline's stages from the first tuned one, in folders keyed by the trial's values (shared
with every trial that agrees so far), scored by the label-free objective on the validation images (or val_miou).
Reports to Ray Tune at each rung: after attention (the evidence of its pseudo labels, a minute's work), after the
first segmenter and when finished, so ASHA stops a poor threshold setting before it pays for a segmenter."""
from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import ray

from inetseg import config as C
from inetseg import crf as dense
from inetseg import finetune, imaging, masks, pipeline, registry, shards, storage, tuning
from inetseg.inference import predict_probs, region_evidence
from inetseg.models.io import load_model
from inetseg.stages.common import actor_device, actor_pool, read_stage, usable_images

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
    area_weight: float  # label_free: the size term's weight (tune.area_weight)
    # The stages after which a trial reports ("attention", "segmenter", "final"), in order: ASHA's rungs.
    rungs: list[str] = dataclasses.field(default_factory=lambda: ["final"])


def rungs_of(stage_names: list[str], order: list[str], label_free: bool = True) -> list[str]:
    """Where a trial running `stage_names` reports: after attention (label-free objective only: val_miou needs a
    model) and after the first segmenter when later stages follow them, and at the end."""
    last = max(order.index(n) for n in stage_names)
    early = ("attention", "segmenter") if label_free else ("segmenter",)
    return [n for n in early if n in stage_names and order.index(n) < last] + ["final"]


def rung_value(i: int, reduction_factor: int) -> int:
    """The i-th rung as ASHA's time: 1, r, r^2 (rungs at grace 1 times powers of r, as ASHA places them)."""
    return reduction_factor ** i


class Evidence:
    """Actor: each image's object region (the segmenter's, Eqn 11, after the CRF when given; or, with no
    segmenter, the pseudo label's object pixels) and the classifier's P(tag) of the region and of the rest -> the
    terms of tuning.evidence_score."""

    def __init__(self, segmenter_dir: str, classifier_dir: str, crf: C.CRFParams | None, compute: C.ComputeConfig):
        self.device = actor_device(compute)
        self.segmenter, self.input_size = None, 0
        if segmenter_dir:
            self.segmenter, smeta = load_model(segmenter_dir, self.device, "segmenter")
            self.input_size = int(smeta["input_size"])
        self.classifier, cmeta = load_model(classifier_dir, self.device, "classifier")
        self.classifier_input_size = int(cmeta["input_size"])
        self.crf = crf

    def regions(self, batch: dict, images: list[np.ndarray], labels: np.ndarray) -> list[np.ndarray]:
        if self.segmenter is None:  # a PSEUDO batch: the trimap's ignore band is not claimed as object
            return [masks.decode_mask(m) == lab for m, lab in zip(batch["mask"], labels)]
        probs = predict_probs(self.segmenter, images, self.input_size, self.device)
        if self.crf is not None:
            probs = [dense.dense_crf(im, p, self.crf) for im, p in zip(images, probs)]
        return [finetune.object_region(p, int(lab)) for p, lab in zip(probs, labels)]

    def __call__(self, batch: dict) -> dict:
        images = [imaging.decode_rgb(b) for b in batch["image"]]
        labels = np.asarray(batch["label"], dtype=np.int64)
        return region_evidence(self.classifier, images, self.regions(batch, images, labels), labels,
                               self.classifier_input_size, self.device)


def keep_share(batch: pa.Table, share: float, salt: str) -> pa.Table:
    """The rows whose salted id hash falls in `share` (the same rows in every trial; no id list on the driver)."""
    return batch.filter(pa.array(finetune.held_out(batch.column("id").to_pylist(), share, salt=salt)))


def evidence(table: str, what: str, columns: list[str], cfg: Any, plan: Plan, model: str) -> dict:
    """tuning.evidence_score over (a fixed hash subset of at most val_images of) the rows of `table` (an IMAGES
    table's usable rows; with no model, a PSEUDO table's rows)."""
    ds = usable_images(table, what, columns) if model else read_stage(table, what, columns=columns)
    n = shards.count_rows(table)
    if n > plan.val_images:
        ds = ds.map_batches(keep_share, batch_format="pyarrow",
                            fn_kwargs={"share": plan.val_images / n, "salt": "tune"})
    crf = C.subset(C.CRFParams, cfg.crf) if cfg.crf.enabled and model else None
    terms = ds.map_batches(Evidence, batch_format="numpy", fn_constructor_kwargs={
        "segmenter_dir": model, "classifier_dir": cfg.classifier.out, "crf": crf,
        "compute": cfg.predict.compute}, **actor_pool(cfg.predict.compute)).to_pandas()
    return {"objective": tuning.evidence_score(terms["p_in"], terms["p_out"], terms["area"], plan.area_weight),
            "p_in": float(terms["p_in"].mean()), "p_out": float(terms["p_out"].mean()),
            "area": float(terms["area"].mean()), "val_images": len(terms)}


def label_free(cfg: Any, plan: Plan, model: str) -> dict:
    """tuning.evidence_score of `model`'s masks on the validation images (nothing trained on them)."""
    return evidence(plan.val_table, "validation images", ["id", "label", "image"], cfg, plan, model)


def pseudo_evidence(cfg: Any, plan: Plan) -> dict:
    """The first rung: tuning.evidence_score of the attention stage's pseudo labels on the images they label (the
    classifier trained on these images, so this ranks settings, it does not judge them: the later rungs do)."""
    return evidence(cfg.attention.out, "pseudo labels", ["id", "label", "image", "mask"], cfg, plan, "")


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


def score(cfg: Any, plan: Plan, model: str) -> dict:
    """The trial's objective for `model`, as the search was configured."""
    return val_miou(cfg, plan, model) if plan.objective == "val_miou" else label_free(cfg, plan, model)


def trial_stages(cfg: Any, plan: Plan) -> list:
    """The stages a trial runs: from the first tuned one on, never a scoring stage."""
    at = plan.order.index
    return [s for s in registry.stages_of(cfg) if at(s.name) >= at(plan.first) and s.name not in SCORING]


def steps(params: dict, plan: Plan, rung: int) -> dict:
    """The trial's stages up to rung `rung` (after the previous rung's), and that rung's score: the pseudo labels'
    evidence after attention, the segmenter's after the segmenter, the final model's at the end. Values the
    pipeline refuses score tuning.INVALID."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars, ctx.print_on_execution_start = False, False  # one line per trial, by the driver
    name, at = plan.rungs[rung], plan.order.index
    after = at(plan.rungs[rung - 1]) if rung > 0 else -1
    try:  # values the pipeline refuses, or a stage that finds them unusable (fine-tuning keeps no image)
        cfg = trial_config(params, plan)
        for stage in trial_stages(cfg, plan):
            if at(stage.name) > after and (name == "final" or at(stage.name) <= at(name)):
                out = getattr(cfg, stage.name).out  # one trial at a time in a stage folder trials share
                with storage.exclusive(out, "stage", wait=True, lock_file=out.rstrip("/") + ".lock"):
                    pipeline.run_one(cfg, stage, plan.classes)
    except C.ConfigError as e:
        return {"objective": tuning.INVALID, "valid": 0, "stage": "final", "error": str(e)}
    if name == "attention":  # label_free only (rungs_of): val_miou has no model to score yet
        return {**pseudo_evidence(cfg, plan), "valid": 1, "stage": name}
    if name == "segmenter":
        return {**score(cfg, plan, cfg.segmenter.out), "valid": 1, "stage": name}
    return {**score(cfg, plan, cfg.predict.model), "valid": 1, "stage": "final", "model": cfg.predict.model}


def trial(params: dict, plan: Plan, reduction_factor: int = 3) -> None:
    """Ray Tune function trainable: one report per rung, its `rung` ASHA's time (1, r, r^2).

    The work runs in a task outside the trial's placement group: Tune places a trial's child tasks in the trial's
    own bundle, where the stages' Ray Data and Ray Train work (1 CPU per task) would wait forever."""
    from ray import tune
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    task = ray.remote(steps).options(num_cpus=0, max_retries=0,
                                     scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=None))
    for i in range(len(plan.rungs)):
        result = ray.get(task.remote(params, plan, i))
        tune.report({**result, "rung": rung_value(i, reduction_factor)})
        if not result["valid"]:
            return
