"""Filter stage: rounds of training a classifier (Ray Train), scoring every image (Ray Data actor pool) and
dropping noisy ones by the paper's rules; paper mode or out-of-fold (cross-fitted) scoring."""
from __future__ import annotations

import copy
import functools
import logging
import posixpath
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from inetseg import config as C
from inetseg import filtering, schema, shards, storage
from inetseg.models.io import load_model
from inetseg.stages.common import (
    actor_device,
    actor_pool,
    declared_fingerprint,
    filter_ids,
    read_stage,
    run_stage,
    stage_fingerprint,
    usable_images,
    write_stage,
)
from inetseg.train import classifier
from inetseg.train.data import classifier_batch, to_input

log = logging.getLogger("inetseg")


class Scorer:
    """Actor: holds the classifier once, scores batches of IMAGES rows (Eqn 13-15 inputs)."""

    def __init__(self, model_dir: str, compute: C.ComputeConfig, rule: dict, round_: int):
        self.device = actor_device(compute)
        self.model, meta = load_model(model_dir, self.device, "classifier")
        self.input_size = meta["input_size"]
        self.rule, self.round = rule, round_

    def __call__(self, batch: dict) -> pa.Table:
        x = classifier_batch(batch, self.input_size, augment=False)["x"]
        with torch.no_grad():
            probs = torch.softmax(self.model(to_input(torch.from_numpy(x).to(self.device))).float(), 1).cpu().numpy()
        labels = np.asarray(batch["label"])
        p_tag, rank = filtering.tag_scores(probs, labels)
        kept = filtering.keep_mask(p_tag, rank, **self.rule)
        return pa.Table.from_pydict({
            "id": list(batch["id"]), "tag": list(batch["tag"]), "label": labels.astype(np.int16),
            "p_tag": p_tag, "tag_rank": rank, "probs": list(probs.astype(np.float32)),
            "top_k": list(filtering.top_classes(probs)),
            "kept": kept, "round": np.full(len(kept), self.round, np.int8),
        }, schema=schema.SCORES)


def score(images: str, model_dir: str, out: str, rule: dict, round_: int, compute: C.ComputeConfig,
          folds: int = 0, fold: int = -1) -> dict:
    """SCORES rows for the usable images (only those of `fold` when folds > 1) into `out`; returns the
    marker fields (none: the table is the result)."""
    ds = usable_images(images, "image shards", ["id", "tag", "label", "image"])
    if folds > 1:
        ds = ds.map_batches(classifier.fold_rows, batch_format="pyarrow",
                            fn_kwargs={"folds": folds, "fold": fold, "keep": True})
    scored = ds.map_batches(Scorer, batch_format="numpy",
                            fn_constructor_kwargs={"model_dir": model_dir, "compute": compute, "rule": rule,
                                                   "round_": round_},
                            **actor_pool(compute))
    write_stage(scored, out, schema.SCORES)
    return {}


def keep_images(images: str, kept_ids: pa.Array, out: str) -> dict:
    """The IMAGES rows whose id was kept, into `out` (the next round's input); returns its marker fields."""
    ds = read_stage(images, "image shards").map_batches(
        filter_ids, batch_format="pyarrow", fn_kwargs={"ids": kept_ids, "keep": True})
    write_stage(ds, out, schema.IMAGES)
    return {"classes": classifier.classes_of(images), "ok": len(kept_ids), "total": len(kept_ids), "failed": {}}


def round_counts(scores: pa.Table) -> dict:
    """in / kept / dropped overall and per tag, from a round's SCORES."""
    def per_tag(tags: pa.ChunkedArray) -> dict[str, int]:  # Arrow counts: no Python string per image
        return {v["values"]: v["counts"] for v in pc.value_counts(tags).to_pylist()}

    per_in = per_tag(scores.column("tag"))
    per_out = per_tag(pc.filter(scores.column("tag"), scores.column("kept")))
    kept = sum(per_out.values())
    return {"in": scores.num_rows, "kept": kept, "dropped": scores.num_rows - kept,
            "per_tag": {t: {"in": per_in[t], "kept": per_out.get(t, 0)} for t in sorted(per_in)}}


def round_classifier(cfg: C.FilterConfig, images: str, out: str, fold: int = -1,
                     init_from: str = "") -> C.ClassifierConfig:
    """filter.train aimed at one round's images and model folder (its own Ray Train storage beside it)."""
    c = copy.deepcopy(cfg.train)
    c.images, c.out = images, out
    if init_from:
        c.init_from = init_from
    c.folds, c.fold = (cfg.folds, fold) if fold >= 0 else (0, -1)
    c.storage_path = storage.join(out + "_ray_train") if not cfg.train.storage_path else storage.join(
        cfg.train.storage_path, posixpath.basename(out.rstrip("/")))
    return c


def train_classifier(ccfg: C.ClassifierConfig, what: str, resume: bool) -> dict:
    """A round's classifier, resumable on its own with the classifier stage's fingerprint and run name."""
    classifier.check(ccfg)
    fp = declared_fingerprint("classifier", ccfg)
    return run_stage(what, ccfg.out, fp, resume, lambda: classifier.fit(ccfg, f"classifier-{fp}", label=what))


def run_round(cfg: C.FilterConfig, r: int, rule: dict, images: str, resume: bool) -> dict:
    """One round: train (k models in oof mode), score, keep. Each step is resumable on its own."""
    t0 = time.time()
    rdir = storage.join(cfg.out, f"round{r}")
    scores_dir, images_out = storage.join(rdir, "scores"), storage.join(rdir, "images")
    folds = list(range(cfg.folds)) if cfg.mode == "oof" else [-1]
    accs, score_dirs = [], []
    for f in folds:
        name = "classifier" if f < 0 else f"classifier-fold{f}"
        # Warm start: the previous round's model (same fold, so an oof model still never saw its fold)
        # continues on the cleaner images. From scratch, each round's short schedule left the last
        # round's model less sure of clean images than the one before (demo: median P(tag) 0.81 vs 0.97).
        init = storage.join(cfg.out, f"round{r - 1}", name) if cfg.warm_start and r > 1 else ""
        ccfg = round_classifier(cfg, images, storage.join(rdir, name), f, init)
        log.info("filter round %d (%s): training %s on %s", r, rule["rule"], name, images)
        cmeta = train_classifier(ccfg, f"filter round {r} {name}", resume)
        accs.append(cmeta.get("metrics", {}).get("val_acc"))
        sdir = scores_dir if f < 0 else storage.join(scores_dir, f"fold{f}")
        score_dirs.append(sdir)
        fp = stage_fingerprint({"rule": rule, "round": r, "fold": f, "compute": C.to_dict(cfg.compute)},
                               images, ccfg.out)
        folds_scored = cfg.folds if f >= 0 else 0
        run_stage(f"filter round {r} scoring", sdir, fp, resume,
                  functools.partial(score, images, ccfg.out, sdir, rule, r, cfg.compute, folds_scored, f))
    scores = pa.concat_tables([shards.read_table(d, columns=["id", "tag", "kept"]) for d in score_dirs])
    counts = round_counts(scores)
    kept_ids = pc.filter(scores.column("id"), scores.column("kept")).combine_chunks()
    fp = stage_fingerprint({"round": r}, *score_dirs)
    run_stage(f"filter round {r} keep", images_out, fp, resume, lambda: keep_images(images, kept_ids, images_out))
    return {"round": r, **rule, **counts, "classifier_val_acc": accs, "seconds": round(time.time() - t0, 2)}


def run(cfg: C.FilterConfig, resume: bool = True) -> dict:
    """The paper's rounds (Eqn 13, 14, 15), each retraining on what the last kept; returns the stage marker
    with every round's counts. The kept images of the last round are at filtering.filtered_images(cfg)."""
    shards.require(cfg.images, "image shards")
    fp = declared_fingerprint("filter", cfg)
    # keep_partial: every round's steps resume on their own (finished models, scores and images are reused).
    return run_stage("filter", cfg.out, fp, resume, lambda: run_rounds(cfg, resume), keep_partial=True)


def run_rounds(cfg: C.FilterConfig, resume: bool) -> dict:
    """Every round in order, each on the images the last one kept; returns the stage marker's fields."""
    t0 = time.time()
    rounds, images = [], cfg.images
    schedule = filtering.paper_rounds(cfg.rounds, cfg.eqn13_threshold, cfg.eqn14_top_k, cfg.eqn15_threshold)
    for r, rule in enumerate(schedule, start=1):
        meta = run_round(cfg, r, rule, images, resume)
        log.info("filter round %d (%s): %d in, %d dropped, %d kept", r, rule["rule"], meta["in"], meta["dropped"],
                 meta["kept"])
        if meta["kept"] == 0:  # nothing left to train the next round or the final classifier on
            key = {"eqn13": "eqn13_threshold", "eqn14": "eqn14_top_k", "eqn15": "eqn15_threshold"}[rule["rule"]]
            raise C.ConfigError(f"filter round {r} ({rule['rule']}) kept none of its {meta['in']} images: "
                                f"filter.{key}={getattr(cfg, key)} is too strict for this round's classifier "
                                f"(relax it, or train the rounds longer: filter.train.epochs)")
        rounds.append(meta)
        images = storage.join(cfg.out, f"round{r}", "images")
    n_in = rounds[0]["in"] if rounds else int(shards.read_marker(cfg.images)["ok"])
    n_out = rounds[-1]["kept"] if rounds else n_in
    return {"classes": classifier.classes_of(cfg.images), "mode": cfg.mode, "rounds": rounds, "in": n_in,
            "kept": n_out, "dropped": n_in - n_out, "images": filtering.filtered_images(cfg),
            "seconds": time.time() - t0}
