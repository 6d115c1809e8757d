"""`inetseg <stage> [--config FILE] [key=value ...]` and `inetseg pipeline`: the command line."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import typing

from inetseg import config as C
from inetseg.evalsets import DataSetError
from inetseg.masks import MaskError

log = logging.getLogger("inetseg")

STAGE_HELP = {
    "synth": "generate the offline synthetic noisy web-search corpus (out=DIR required)",
    "crawl": "search Flickr per tag (flickrapi), sliced by upload date, resumable -> URL manifest "
             "(out=DIR tags=a,b,c; FLICKR_API_KEY / FLICKR_API_SECRET)",
    "ingest": "folder-per-tag tree or crawl manifest -> validated, de-duplicated, resumable image shards (source=DIR out=DIR)",
    "classifier": "train GoogLeNet (weights=None) with Ray Train on image shards (images=DIR out=DIR)",
    "filter": "rounds of train / score / drop noisy images, Eqn 13, 14, 15; paper or out-of-fold (images= out=)",
    "attention": "forward CAM + trimap -> pseudo-label shards (images= model= out=)",
    "segmenter": "train the DeepLab-style segmenter on pseudo labels (pseudo= model= out=)",
    "predict": "run the segmenter over a test table (test= model= out=)",
    "crf": "dense-CRF refinement of predictions (predictions= out=)",
    "evaluate": "mIoU of predictions against their ground truth (predictions= out=, or pred= gt= out=)",
    "segment": "segment your own photos with a trained segmenter (model=DIR images=DIR_OR_FILE out=DIR)",
}

# Longer --help descriptions where one line cannot say how to use a stage.
STAGE_DESCRIPTION = {
    "evaluate": """mIoU of predictions against their ground truth, in one of two forms:

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
      OUT/confusion.png.""",
    "segment": """segment your own photos with a trained segmenter.

model= is a trained segmenter folder (a pipeline run's segmenter/: model.pt + meta.json); images= is one
photo or a folder searched recursively. Every photo is segmented at its own (EXIF-oriented) size.
Writes into out=, where NAME is the photo's path below images= without its suffix:
  masks/NAME.png      palette PNG (mode P): pixel value = class id (0 background, i = classes.json[i-1]);
                      VOC colours for viewing
  overlays/NAME.jpg   the photo with the mask's colours blended in and a legend of the classes present
  probs/NAME.npy      with probs=true: float16 softmax, (K+1) x H x W
  classes.json        ["name1", ..., "nameK"] (ids 1..K; no background)
  summary.json        counts (images, segmented, reused, failed by reason), seconds, pixel share per class
  failed.json         photos that did not decode, with the reason; they are skipped, never fatal
crf=true refines masks with the dense CRF (crf_params.iterations= etc.). A re-run skips photos whose
files exist (same model and settings); --no-resume redoes them all. compute.use_gpu=true runs on GPU.""",
}

# The keys each stage needs; a stage with several ways to run lists one tuple per way.
REQUIRED: dict[str, tuple[tuple[str, ...], ...]] = {
    "synth": (("out",),), "crawl": (("out", "tags"),), "ingest": (("source", "out"),),
    "classifier": (("images", "out"),), "filter": (("images", "out"),), "attention": (("images", "model", "out"),),
    "segmenter": (("pseudo", "model", "out"),), "predict": (("test", "model", "out"),),
    "crf": (("predictions", "out"),), "evaluate": (("predictions", "out"), ("pred", "gt", "out")),
    "segment": (("model", "images", "out"),),
}


def describe_fields(cls: type, prefix: str = "", defaults: typing.Any = None) -> str:
    """The keys a config accepts with their defaults (a nested config's as its parent sets them), for --help."""
    lines = []
    hints = typing.get_type_hints(cls)
    defaults = cls() if defaults is None else defaults
    for f in dataclasses.fields(cls):
        default = getattr(defaults, f.name)
        if dataclasses.is_dataclass(default):
            lines.append(describe_fields(type(default), prefix + f.name + ".", default))
            continue
        tp = getattr(hints[f.name], "__name__", str(hints[f.name]))
        lines.append(f"  {prefix + f.name:<34} {tp:<10} default: {default!r}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inetseg",
        description="Learn pixel-wise semantic segmentation from Internet images with no human labels.",
        epilog="Run `inetseg <command> --help` to see every key a command accepts.")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    p = sub.add_parser("pipeline", help="run every stage end to end (the offline demo by default)",
                       description="Run the whole pipeline. With no arguments: the offline demo on a "
                                   "synthetic corpus, local Ray, local MLflow, a few minutes on 2 CPUs.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="keys (key=value, dotted for stages, e.g. classifier.epochs=5):\n"
                              + describe_fields(C.PipelineConfig))
    add_pipeline_args(p)
    ff = sub.add_parser("fake-flickr", help="serve an offline Flickr (search API + images) from a "
                                            "folder-per-tag corpus on loopback",
                        description="A loopback Flickr for offline crawls and tests: answers "
                                    "flickr.photos.search and serves the images, with fault injection.")
    ff.add_argument("--corpus", required=True, help="folder-per-tag images (e.g. a synth corpus's search/)")
    ff.add_argument("--host", default="127.0.0.1")
    ff.add_argument("--port", type=int, default=8700)
    ff.add_argument("--max-results", type=int, default=4000, help="results reachable per query (Flickr: 4000)")
    for knob in ("error_rate", "rate_limit_rate", "latency", "truncate_rate", "wrong_type_rate",
                 "garbage_rate", "oversized_rate"):
        ff.add_argument("--" + knob.replace("_", "-"), type=float, default=0.0, dest=knob)
    for name, text in STAGE_HELP.items():
        sp = sub.add_parser(name, help=text, description=STAGE_DESCRIPTION.get(name, text),
                            formatter_class=argparse.RawDescriptionHelpFormatter,
                            epilog="keys (key=value):\n" + describe_fields(C.STAGE_CONFIGS[name]))
        sp.add_argument("--config", help="YAML file with this stage's keys (or a pipeline file: its "
                                         f"'{name}' section is used)")
        sp.add_argument("--ray-address", default="", help="Ray cluster address (default: local Ray)")
        sp.add_argument("--num-cpus", type=int, default=0, help="CPUs for a local Ray (default: all)")
        sp.add_argument("--no-resume", action="store_true", help="redo the stage even if its output is complete")
        sp.add_argument("overrides", nargs="*", metavar="key=value")
    return parser


def add_pipeline_args(p: argparse.ArgumentParser) -> None:
    """Arguments shared by `inetseg pipeline` and jobs/full_pipeline.py."""
    p.add_argument("--preset", default="demo", help="starting config: demo (default, offline, minutes on "
                                                    "a laptop), paper (the paper's settings), none")
    p.add_argument("--config", help="YAML file merged over the preset")
    p.add_argument("--out", help="output root, local path or s3://, gs:// URI (same as out=...)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("overrides", nargs="*", metavar="key=value")


def run_pipeline(args: argparse.Namespace) -> int:
    """Resolve the config, run, print the summary table."""
    from inetseg import pipeline

    overrides = list(args.overrides) + ([f"out={args.out}"] if args.out else [])
    cfg = pipeline.load_config(args.preset, args.config, overrides)
    if args.print_config:
        print(C.dump_yaml(cfg))
        return 0
    summary = pipeline.run(cfg)
    print(pipeline.format_table(summary))
    print(f"summary: {cfg.out}/summary.json")
    return 0


def required_keys(name: str, cfg: typing.Any) -> tuple[str, ...]:
    """The first of the stage's ways to run whose keys are all set; else ConfigError naming what is missing."""
    missing = []
    for keys in REQUIRED[name]:
        lacking = [k for k in keys if not getattr(cfg, k)]
        if not lacking:
            return keys
        missing.append(", ".join(k + "=..." for k in lacking))
    raise C.ConfigError(f"{name} needs {' or '.join(missing)}")


def run_stage(args: argparse.Namespace) -> int:
    """One stage on its own: its config from --config/key=value, Ray started as asked."""
    import json

    name = args.command
    cfg = C.load(C.STAGE_CONFIGS[name], args.config, args.overrides, section=name)
    from inetseg import storage

    for key in required_keys(name, cfg):  # fail on a missing input before paying for a Ray start
        if key not in ("out", "tags") and not storage.exists(getattr(cfg, key)):
            raise FileNotFoundError(f"{name}: {key}={getattr(cfg, key)} does not exist")
    resume = not args.no_resume
    if name == "synth":
        from inetseg.sources import synth

        result = synth.generate(cfg, cfg.out)
    elif name == "crawl":
        from inetseg.sources import flickr

        result = flickr.crawl(cfg)
    else:
        import importlib

        from inetseg.stages.common import ensure_ray

        module = importlib.import_module(f"inetseg.stages.{name}")
        if hasattr(module, "check"):  # a stage's own input checks, before paying for a Ray start
            module.check(cfg)
        ensure_ray(args.ray_address, args.num_cpus)
        result = module.run(cfg, resume=resume)
    printable = {k: v for k, v in result.items() if k not in ("history", "confusion")}
    print(json.dumps(printable, indent=2, default=str))
    return 0


def serve_fake_flickr(args: argparse.Namespace) -> int:
    """Run the offline Flickr until interrupted; prints the REST URL to give `crawl rest_url=`."""
    import time

    from inetseg import storage
    from inetseg.sources.fake_flickr import FakeFlickr, Faults

    if not storage.is_dir(args.corpus):
        raise FileNotFoundError(f"fake-flickr: corpus folder not found: {args.corpus}")
    faults = Faults(**{k: getattr(args, k) for k in ("error_rate", "rate_limit_rate", "latency", "truncate_rate",
                                                      "wrong_type_rate", "garbage_rate", "oversized_rate")})
    with FakeFlickr(args.corpus, args.host, args.port, faults, args.max_results) as fake:
        print(f"fake Flickr serving {len(fake.photos)} photos: rest_url={fake.rest_url}", flush=True)
        while True:
            time.sleep(3600)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `inetseg` console script; user mistakes exit 2 with one line."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        if args.command == "fake-flickr":
            return serve_fake_flickr(args)
        return run_pipeline(args) if args.command == "pipeline" else run_stage(args)
    except (C.ConfigError, FileNotFoundError, DataSetError, MaskError) as e:
        print(f"inetseg {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"inetseg {args.command}: interrupted; finished stages are kept and reused on re-run",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
