"""Finetune stage: online fine-tuning (Section 3.2). Per round, the segmenter labels the held-out images (Eqn 11),
the classifier keeps those whose segmented object it still names (Eqn 12) in a Ray Data actor pool, and the
segmenter trains again on their pseudo labels (Eqn 9-10) with Ray Train. Each step resumes on its own."""
from __future__ import annotations

import functools
import logging
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from inetseg import config as C
from inetseg import finetune, imaging, schema, shards, storage
from inetseg.attention.maps import Method
from inetseg.inference import predict_probs, tag_probability
from inetseg.models.io import META_FILE, load_model
from inetseg.stages import common
from inetseg.train import segmenter as train_segmenter

log = logging.getLogger("inetseg")


class Relabeller:
    """Actor: holds the segmenter and the classifier once; IMAGES rows -> RELABELLED rows (Eqn 11, 12, 9-10)."""

    def __init__(self, segmenter_dir: str, cfg: C.FinetuneConfig):
        self.device = common.actor_device(cfg.compute)
        self.segmenter, smeta = load_model(segmenter_dir, self.device, "segmenter")
        self.classifier, cmeta = load_model(cfg.classifier, self.device, "classifier")
        # Each net sees the images at the size it was trained at (a demo net at 128 px labels poorly at 321).
        self.input_size, self.classifier_input_size = int(smeta["input_size"]), int(cmeta["input_size"])
        self.cfg, self.method = cfg, C.subset(Method, cfg, partial=True)

    def __call__(self, batch: dict) -> pa.Table:
        images = [imaging.decode_rgb(b) for b in batch["image"]]
        labels = np.asarray(batch["label"], dtype=np.int64)
        probs = predict_probs(self.segmenter, images, self.input_size, self.device)
        regions = [finetune.object_region(p, int(lab)) for p, lab in zip(probs, labels)]
        p_tag = tag_probability(self.classifier, [finetune.masked_image(im, m) for im, m in zip(images, regions)],
                                labels, self.classifier_input_size, self.device)
        kept = finetune.keep(p_tag, self.cfg.mu)
        rows: dict[str, list] = {n: [] for n in schema.RELABELLED.names}
        for i, label in enumerate(labels):
            if self.cfg.labels == "region":
                mask, att = finetune.region_label(regions[i], int(label)), probs[i][label]
            else:
                mask, att = finetune.pseudo_from_segmenter(probs[i][label], images[i], int(label), self.method)
            for key, value in (("id", batch["id"][i]), ("tag", batch["tag"][i]), ("label", int(label)),
                               ("image", batch["image"][i]), ("mask", imaging.encode_png(mask)),
                               ("attention", imaging.encode_png((att * 255).round().astype(np.uint8))),
                               ("height", att.shape[0]), ("width", att.shape[1]),
                               ("ignored", float((mask == schema.IGNORE).mean())),
                               ("foreground", float((mask == label).mean())),
                               ("p_tag", float(p_tag[i])), ("kept", bool(kept[i]))):
                rows[key].append(value)
        return pa.Table.from_pydict(rows, schema=schema.RELABELLED)


def relabel(cfg: C.FinetuneConfig, model: str, out: str) -> dict:
    """Every held-out image labelled by `model` and judged by the classifier, into `out` (RELABELLED)."""
    ds = common.usable_images(cfg.images, "held-out image shards", ["id", "tag", "label", "image"])
    scored = ds.map_batches(Relabeller, batch_format="numpy",
                            fn_constructor_kwargs={"segmenter_dir": model, "cfg": cfg},
                            **common.actor_pool(cfg.compute))
    common.write_stage(scored, out, schema.RELABELLED)
    t = shards.read_table(out, columns=["p_tag", "kept", "ignored"])
    n, kept = t.num_rows, int(pc.sum(t.column("kept")).as_py() or 0)
    return {"images": n, "kept": kept, "kept_share": kept / n if n else 0.0,
            "mean_p_tag": float(pc.mean(t.column("p_tag")).as_py() or 0) if n else 0.0}


def kept_pseudo(scored: str, out: str) -> dict:
    """The kept rows of a RELABELLED table as a PSEUDO table (what the segmenter trains on)."""
    from ray.data.expressions import col, lit

    # An Arrow expression, as usable_images filters: a per-row Python lambda would unpack every image row.
    ds = common.read_stage(scored, "relabelled held-out images").filter(expr=col("kept") == lit(True))
    common.write_stage(ds.select_columns(schema.PSEUDO.names), out, schema.PSEUDO)
    return {"images": shards.count_rows(out)}


# Keys that shape the fine-tuning run but not one image's label or verdict (hashed by the segmenter step instead).
_TRAINING_ONLY = ("epochs", "lr", "include_initial", "pseudo", "out", "rounds", "enabled", "compute")


def run_round(cfg: C.FinetuneConfig, r: int, model: str, resume: bool) -> dict:
    """One round: relabel, keep, fine-tune; returns its counts and where its segmenter is."""
    t0 = time.time()
    rdir = storage.join(cfg.out, f"round{r}")
    scored, pseudo = storage.join(rdir, "scored"), storage.join(rdir, "pseudo")
    # What changes the labels only: a new fine-tuning lr or epochs re-trains, it does not relabel every image.
    labelling = {k: v for k, v in C.to_dict(cfg).items() if k not in _TRAINING_ONLY}
    fp = common.stage_fingerprint({"round": r, **labelling}, cfg.images, model, cfg.classifier)
    counts = common.run_stage(f"finetune round {r} relabel", scored, fp, resume,
                       functools.partial(relabel, cfg, model, scored))
    common.run_stage(f"finetune round {r} keep", pseudo, common.stage_fingerprint({"round": r}, scored), resume,
              functools.partial(kept_pseudo, scored, pseudo))
    if counts["kept"] == 0:
        raise C.ConfigError(f"finetune round {r} kept none of its {counts['images']} held-out images: "
                            f"finetune.mu={cfg.mu} is too strict for this classifier")
    seg = train_segmenter.recorded_config(storage.read_json(storage.join(model, META_FILE)))
    seg.epochs, seg.lr = cfg.epochs or seg.epochs, cfg.lr or seg.lr
    seg.pseudo, seg.model, seg.init_from = pseudo, cfg.classifier, model
    seg.extra_pseudo = [cfg.pseudo] if cfg.include_initial else []
    seg.out = storage.join(rdir, "segmenter")
    seg_fp = common.declared_fingerprint("segmenter", seg)
    meta = common.run_stage(f"finetune round {r} segmenter", seg.out, seg_fp, resume,
                     functools.partial(train_segmenter.fit, seg, f"finetune-{seg_fp}"))
    log.info("finetune round %d: kept %d of %d held-out images (mean P(tag | I.M) %.2f)", r, counts["kept"],
             counts["images"], counts["mean_p_tag"])
    return {"round": r, **{k: counts[k] for k in ("images", "kept", "kept_share", "mean_p_tag")},
            "trained_on": meta.get("images"), "metrics": meta.get("metrics", {}), "segmenter": seg.out,
            "seconds": round(time.time() - t0, 2)}


def run(cfg: C.FinetuneConfig, resume: bool = True) -> dict:
    """cfg.rounds rounds from cfg.model; the last round's segmenter (out/round<rounds>/segmenter) is the output."""
    for path, what in ((cfg.images, "held-out image shards"), (cfg.classifier, "classifier model"),
                       (cfg.model, "segmenter model")):
        shards.require(path, what)
    if cfg.include_initial:
        shards.require(cfg.pseudo, "pseudo-label shards")

    def body() -> dict:
        t0, model, rounds = time.time(), cfg.model, []
        for r in range(1, cfg.rounds + 1):
            rounds.append(run_round(cfg, r, model, resume))
            model = rounds[-1]["segmenter"]
        return {"rounds": rounds, "model": model, "seconds": time.time() - t0,
                "classes": list(shards.read_marker(cfg.images).get("classes", []))}

    return common.run_stage("finetune", cfg.out, common.declared_fingerprint("finetune", cfg), resume, body,
                            keep_partial=True)
