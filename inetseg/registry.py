"""The stage registry: one declaration per stage, from which the CLI, `--help`, the pipeline's order, its
paths, the resume fingerprints, the MLflow nested runs and the run's config all follow.

Adding a stage = its module (a config dataclass and `run(cfg, resume) -> dict`) + one `Stage(...)` entry
below, in data-flow order (CONTRIBUTING.md: "Adding a stage"). Stage modules import torch and Ray, so they are
named here as "module:function" and imported only when the stage runs: `inetseg --help` stays instant.
"""
from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from inetseg import config as C
from inetseg import filtering, storage

Metrics = Iterable[tuple[dict, "int | None"]]  # (metrics, step) pairs logged to a stage's MLflow run


@dataclass(frozen=True)
class In:
    """Where an input key's path comes from when the user leaves it empty: the first listed product
    ("stage" = its out, "stage.product") whose stage is in this run, else the run-level key `run_key`."""

    products: tuple[str, ...]
    run_key: str = ""
    when: str = ""  # only when this stage is in the run (else the key stays empty)


def _history(meta: dict) -> Metrics:
    """A trained net's per-epoch metrics as a step series."""
    for i, row in enumerate(meta.get("history", [])):
        yield {k: v for k, v in row.items() if isinstance(v, (int, float))}, i


def _filter_metrics(meta: dict) -> Metrics:
    """The filter's totals, then each round's counts overall and per tag as a step series."""
    yield {"in": meta["in"], "kept": meta["kept"], "dropped": meta["dropped"]}, None
    for rnd in meta["rounds"]:
        yield {"round_in": rnd["in"], "round_kept": rnd["kept"], "round_dropped": rnd["dropped"],
               **{f"kept_{t}": c["kept"] for t, c in rnd["per_tag"].items()},
               **{f"in_{t}": c["in"] for t, c in rnd["per_tag"].items()}}, rnd["round"]


def _nothing(meta: dict) -> dict:
    return {}


@dataclass(frozen=True)
class Stage:
    """Everything the rest of the system needs to know about one stage."""

    name: str
    config: type  # its config dataclass (the `<name>:` section of a pipeline config)
    run: str  # "module:function", called as function(cfg, resume) -> result dict
    help: str  # one line for `inetseg --help`
    required: tuple[tuple[str, ...], ...] = ()  # keys a command line must set; one tuple per way to run
    description: str = ""  # longer `inetseg <name> --help` text, when one line cannot say how to use it
    folder: str = ""  # its default out under the run's out; "" = a command only, not a pipeline stage
    inputs: Mapping[str, In] = field(default_factory=dict)  # input keys (paths), also hashed into its fingerprint
    products: Mapping[str, Callable[[Any], str]] = field(default_factory=dict)  # outputs besides `out`, by name
    enabled: Callable[[Any], bool] = lambda run: True  # whether a pipeline run has this stage
    ray: bool = True  # needs a Ray cluster (synth and crawl run on the driver)
    metrics: Callable[[dict], Metrics] = lambda meta: ()  # MLflow metrics from its result
    counts: Callable[[dict], dict] = _nothing  # what it adds to the run summary's counts
    # "module:function(cfg, meta, truth, classes) -> {name: quality}": its output scored against the synthetic
    # corpus's hidden truth after it ran (measurement only, never an input), logged to its MLflow run.
    audit: str = ""
    model_kind: str = ""  # the net it exports ("classifier", "segmenter"), logged to its MLflow run as a model

    def model_dir(self, cfg: Any) -> str:
        """The folder (model.pt + meta.json) of the net it exports: its "model" product, else its out."""
        return self.products["model"](cfg) if "model" in self.products else cfg.out

    def function(self) -> Callable[..., dict]:
        """The stage's run function (imports its module)."""
        module, name = self.run.split(":")
        return getattr(importlib.import_module(module), name)

    def auditor(self) -> Callable[..., dict] | None:
        """The stage's hidden-truth audit, if it has one (imports its module)."""
        if not self.audit:
            return None
        module, name = self.audit.split(":")
        return getattr(importlib.import_module(module), name)

    def module(self) -> Any:
        return importlib.import_module(self.run.split(":")[0])


def scored(run: Any) -> bool:
    """The run has labelled test images (a test folder, or the synthetic corpus's)."""
    return bool(run.test) or run.source == "synth"


STAGES: tuple[Stage, ...] = (
    Stage("synth", C.SynthConfig, "inetseg.sources.synth:run", ray=False, folder="corpus",
          help="generate the offline synthetic noisy web-search corpus (out=DIR required)", required=(("out",),),
          products={"search": lambda c: storage.join(c.out, "search"), "test": lambda c: storage.join(c.out, "test")},
          enabled=lambda run: run.source == "synth"),
    Stage("crawl", C.CrawlConfig, "inetseg.sources.flickr:run", ray=False, required=(("out", "tags"),),
          help="search Flickr per tag (flickrapi), sliced by upload date, resumable -> URL manifest "
               "(out=DIR tags=a,b,c; FLICKR_API_KEY / FLICKR_API_SECRET)"),
    Stage("ingest", C.IngestConfig, "inetseg.stages.ingest:run", folder="images",
          help="folder-per-tag tree or crawl manifest -> validated, de-duplicated, resumable image shards "
               "(source=DIR out=DIR)", required=(("source", "out"),),
          inputs={"source": In(("synth.search",), run_key="source")},
          metrics=lambda m: [({"ok": m["ok"], "total": m["total"]}, None)],
          counts=lambda m: {"ingested": m["ok"], "ingest_failed": m["total"] - m["ok"]}),
    Stage("testset", C.TestSetConfig, "inetseg.stages.testset:run", folder="test",
          help="a labelled test folder (images/, masks/, classes.json) -> the test table (test=DIR out=DIR)",
          required=(("test", "out"),), inputs={"test": In(("synth.test",), run_key="test")}, enabled=scored),
    Stage("filter", C.FilterConfig, "inetseg.stages.filter:run", folder="filter",
          help="rounds of train / score / drop noisy images, Eqn 13, 14, 15; paper or out-of-fold (images= out=)",
          required=(("images", "out"),), inputs={"images": In(("ingest",))},
          products={"images": filtering.filtered_images}, metrics=_filter_metrics,
          counts=lambda m: {"filtered": m["kept"]}),
    Stage("split", C.SplitConfig, "inetseg.stages.split:run", folder="split",
          help="cut the filtered images by id hash: train/, the share online fine-tuning keeps back and a "
               "validation share nothing trains on (images= out= share= val_share=)", required=(("images", "out"),),
          inputs={"images": In(("filter.images", "ingest"))},
          products={"train": lambda c: filtering.split_tables(c.out)["train"],
                    "heldout": lambda c: filtering.split_tables(c.out)["heldout"],
                    "val": lambda c: filtering.split_tables(c.out)["val"]},
          enabled=lambda run: run.finetune.enabled or run.split.val_share > 0,
          counts=lambda m: {k: m[n] for n, k in (("heldout", "held_out"), ("val", "validation")) if n in m}),
    Stage("classifier", C.ClassifierConfig, "inetseg.stages.classifier:run", folder="classifier",
          help="train GoogLeNet (weights=None) with Ray Train on image shards (images=DIR out=DIR)",
          required=(("images", "out"),), inputs={"images": In(("split.train", "filter.images", "ingest"))},
          metrics=_history, model_kind="classifier"),
    Stage("attention", C.AttentionConfig, "inetseg.stages.attention:run", folder="pseudo",
          help="forward CAM + excitation backprop + trimap -> pseudo-label shards (images= model= out=)",
          required=(("images", "model", "out"),),
          inputs={"images": In(("split.train", "filter.images", "ingest")), "model": In(("classifier",))},
          metrics=lambda m: [({k: m[k] for k in ("images", "mean_ignored", "mean_foreground")}, None)],
          counts=lambda m: {"pseudo_labelled": m["images"]}, audit="inetseg.stages.audit:attention_audit"),
    Stage("segmenter", C.SegmenterConfig, "inetseg.stages.segmenter:run", folder="segmenter",
          help="train the DeepLab-style segmenter on pseudo labels (pseudo= model= out=)",
          required=(("pseudo", "model", "out"),), inputs={"pseudo": In(("attention",)), "model": In(("classifier",))},
          metrics=_history, model_kind="segmenter"),
    Stage("finetune", C.FinetuneConfig, "inetseg.stages.finetune:run", folder="finetune",
          help="online fine-tuning, Eqn 11-12: the segmenter labels held-out images, the classifier keeps the ones "
               "it still names, the segmenter trains again (images= classifier= model= pseudo= out=)",
          required=(("images", "classifier", "model", "out"),),
          inputs={"images": In(("split.heldout",)), "classifier": In(("classifier",)), "model": In(("segmenter",)),
                  "pseudo": In(("attention",))},
          products={"model": lambda c: storage.join(c.out, f"round{c.rounds}", "segmenter")},
          enabled=lambda run: run.finetune.enabled,
          metrics=lambda m: [({k: r[k] for k in ("images", "kept", "kept_share", "mean_p_tag")}, r["round"])
                             for r in m["rounds"]],
          counts=lambda m: {"finetune_kept": m["rounds"][-1]["kept"]} if m["rounds"] else {},
          audit="inetseg.stages.audit:finetune_audit", model_kind="segmenter"),
    Stage("predict", C.PredictConfig, "inetseg.stages.predict:run", folder="predictions",
          help="run the segmenter over a test table (test= model= out=)", required=(("test", "model", "out"),),
          inputs={"test": In(("testset",)), "model": In(("finetune.model", "segmenter"))}, enabled=scored,
          counts=lambda m: {"test_images": m["images"]}),
    Stage("crf", C.CRFConfig, "inetseg.stages.crf:run", folder="crf",
          help="dense-CRF refinement of predictions (predictions= out=)", required=(("predictions", "out"),),
          inputs={"predictions": In(("predict",))}, enabled=lambda run: scored(run) and run.crf.enabled),
    Stage("evaluate", C.EvaluateConfig, "inetseg.stages.evaluate:run", folder="eval",
          help="mIoU of predictions against their ground truth (predictions= out=, or pred= gt= out=)",
          required=(("predictions", "out"), ("pred", "gt", "out")), enabled=scored,
          metrics=lambda m: [({"miou": m["miou"], "baseline_miou": m["baseline"]["miou"]}, None)]
          if "baseline" in m else [({"miou": m["miou"]}, None)],
          inputs={"predictions": In(("crf", "predict")), "before_crf": In(("predict",), when="crf")},
          description="""mIoU of predictions against their ground truth, in one of two forms:

  inetseg evaluate predictions=TABLE out=DIR
      a predictions table made by `predict` or `crf` (the pipeline's own form)

  inetseg evaluate pred=DIR gt=DIR_OR_VOC out=DIR [classes=a,b,c] [split=val] [others=background]
      pred: predicted mask PNGs (palette or grey; 0 = background, 1..K = the run's classes, from
            classes=... or a classes.json in pred or its parent), matched to gt by path without extension
      gt:   a folder with masks/ (and images/), or a folder of masks, with an optional classes.json
            (["cat", "dog"] = ids 1, 2; without one the ids are the run's), or a PASCAL VOC tree
            (VOCdevkit, VOCdevkit/VOC2012; palette masks, 255 = void, split= picks the list)
      Classes are matched by name; gt classes the run lacks count as background (others=background)
      or are not scored (others=ignore). Every gt mask needs a prediction unless allow_missing=true.
      Writes OUT/metrics.json (miou, per_class_iou, pixel_accuracy, confusion, images, classes) and
      OUT/confusion.png."""),
    Stage("segment", C.SegmentConfig, "inetseg.stages.segment:run", required=(("model", "images", "out"),),
          help="segment your own photos with a trained segmenter (model=DIR_OR_MLFLOW_URI images=DIR_OR_FILE out=DIR)",
          description="""segment your own photos with a trained segmenter.

model= is a trained segmenter folder (a pipeline run's segmenter/: model.pt + meta.json) or an MLflow model:
models:/inetseg-segmenter@champion, models:/inetseg-segmenter/3, runs:/RUN_ID/segmenter, looked up at mlflow_uri=
(a tracking server or a run folder; default MLFLOW_TRACKING_URI, else ./mlflow.db). images= is one photo or a
folder searched recursively. Every photo is segmented at its own (EXIF-oriented) size.
Writes into out=, where NAME is the photo's path below images= without its suffix:
  masks/NAME.png      palette PNG (mode P): pixel value = class id (0 background, i = classes.json[i-1]);
                      VOC colours for viewing
  overlays/NAME.jpg   the photo with the mask's colours blended in and a legend of the classes present
  probs/NAME.npy      with probs=true: float16 softmax, (K+1) x H x W
  classes.json        ["name1", ..., "nameK"] (ids 1..K; no background)
  summary.json        counts (images, segmented, reused, failed by reason), seconds, pixel share per class
  failed.json         photos that did not decode, with the reason; they are skipped, never fatal
crf=true refines masks with the dense CRF (crf_params.iterations= etc.). A re-run skips photos whose
files exist (same model and settings); --no-resume redoes them all. compute.use_gpu=true runs on GPU."""),
)

# ---------------------------------------------------------------- the run's config

def _run_config(pipeline: tuple[Stage, ...]) -> type:
    """The run's config class: the run-level keys, then a section per pipeline stage."""
    cls = dataclasses.make_dataclass(
        "PipelineConfig",
        [(n, t, field(default=d)) for n, t, d in C.RUN_FIELDS]
        + [(s.name, s.config, field(default_factory=s.config)) for s in pipeline],
        namespace={"validate": C.check_run, "__doc__": "The whole run: where it writes, how it tracks, and every "
                                                      "pipeline stage's settings (a section per stage)."})
    cls.__module__ = __name__  # make_dataclass names its caller only from Python 3.12
    return cls


def _product(run: Any, by_name: Mapping[str, Stage], ref: In, present: set[str]) -> str:
    """The path `ref` names in this run ('' when none of its stages runs and it has no run-level key)."""
    if ref.when and ref.when not in present:
        return ""
    given = getattr(run, ref.run_key) if ref.run_key else ""
    if given and given != "synth":  # a folder the user named wins over the synthetic corpus's
        return given
    for product in ref.products:
        name, _, what = product.partition(".")
        if name in present:
            cfg = getattr(run, name)
            return by_name[name].products[what](cfg) if what else cfg.out
    return ""


def _seed(cfg: Any, seed: int) -> None:
    """Every `seed` left at 0 in cfg and its nested configs takes the run's."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            _seed(value, seed)
        elif f.name == "seed" and not value:
            setattr(cfg, f.name, seed)


class Registry:
    """An ordered set of stages and what follows from it: lookup, the run's config class, paths, run order."""

    def __init__(self, stages: Iterable[Stage]):
        self.stages = tuple(stages)
        self.by_name = {s.name: s for s in self.stages}
        self.pipeline = tuple(s for s in self.stages if s.folder)  # pipeline stages, in data-flow order
        self.run_config = _run_config(self.pipeline)

    def get(self, name: str) -> Stage:
        if name not in self.by_name:
            raise C.ConfigError(f"unknown stage '{name}' (choose from {', '.join(self.by_name)})")
        return self.by_name[name]

    def input_paths(self, name: str, cfg: Any) -> list[str]:
        """The stage's declared input paths as set in `cfg` (what its resume fingerprint hashes)."""
        return [getattr(cfg, key) for key in self.get(name).inputs if getattr(cfg, key)]

    def stages_of(self, run: Any) -> list[Stage]:
        """The stages a run executes, in order."""
        return [s for s in self.pipeline if s.enabled(run)]

    def resolve(self, run: Any) -> Any:
        """Fill every empty stage path of a run's config: each stage's out under the run's out, each input
        from the stage that makes it (or the run's source / test). A path the user set is kept."""
        run.out = storage.absolute(run.out)
        _seed(run, run.seed)
        present = {s.name for s in self.stages_of(run)}
        for stage in self.pipeline:
            cfg = getattr(run, stage.name)
            cfg.out = cfg.out or storage.join(run.out, stage.folder)
            for key, ref in stage.inputs.items():
                setattr(cfg, key, getattr(cfg, key) or _product(run, self.by_name, ref, present))
        if run.classifier_from_filter and not run.classifier.init_from:
            run.classifier.init_from = storage.join(run.filter.out, f"round{run.filter.rounds}", "classifier")
        return run


REGISTRY = Registry(STAGES)
PipelineConfig = REGISTRY.run_config


def get(name: str) -> Stage:
    """The registered stage called `name` (ConfigError naming the choices otherwise)."""
    return REGISTRY.get(name)


def input_paths(name: str, cfg: Any) -> list[str]:
    return REGISTRY.input_paths(name, cfg)


def stages_of(run: Any) -> list[Stage]:
    return REGISTRY.stages_of(run)


def resolve(run: Any) -> Any:
    return REGISTRY.resolve(run)
