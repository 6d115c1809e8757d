"""`inetseg <stage> [--config FILE] [key=value ...]` and `inetseg pipeline`: the command line."""
from __future__ import annotations

import argparse
import dataclasses
import errno
import logging
import sys
import typing

from inetseg import config as C
from inetseg import registry
from inetseg.config.tuning import TuneConfig
from inetseg.evalsets import DataSetError
from inetseg.masks import MaskError
from inetseg.storage import BusyError
from inetseg.tracking import CHAMPION

log = logging.getLogger("inetseg")

def describe_fields(cls: type, prefix: str = "", defaults: typing.Any = None) -> str:
    """The keys a config accepts with their defaults (a nested config's as its parent sets them), for --help."""
    lines = []
    hints = typing.get_type_hints(cls)
    defaults = cls() if defaults is None else defaults
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):  # set by the code, not a user key
            continue
        default = getattr(defaults, f.name)
        if dataclasses.is_dataclass(default):
            lines.append(describe_fields(type(default), prefix + f.name + ".", default))
            continue
        hint = hints[f.name]
        if typing.get_origin(hint) is typing.Literal:  # the choices, as the loader checks them
            tp = "|".join(map(str, typing.get_args(hint)))
        else:
            tp = getattr(hint, "__name__", str(hint))
        lines.append(f"  {prefix + f.name:<34} {tp:<10} default: {default!r}")
    return "\n".join(lines)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; a command's key listing is built only when it is the one asked for."""
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
                              + describe_fields(registry.REGISTRY.run_config))
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
    add_models_args(sub)
    tp = sub.add_parser("tune", help="Ray Tune search over the method's thresholds, scored without labels; "
                                     "writes best.yaml for `pipeline --config`",
                        description=TUNE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog=("tune keys (tune.key=value, or in the --tune file):\n" + describe_fields(TuneConfig))
                        if command == "tune" else None)
    add_tune_args(tp)
    for stage in registry.REGISTRY.stages:
        keys = "keys (key=value):\n" + describe_fields(stage.config) if stage.name == command else None
        sp = sub.add_parser(stage.name, help=stage.help, description=stage.description or stage.help,
                            formatter_class=argparse.RawDescriptionHelpFormatter, epilog=keys)
        sp.add_argument("--config", help="YAML file with this stage's keys (or a pipeline file: its "
                                         f"'{stage.name}' section is used)")
        sp.add_argument("--ray-address", default="", help="Ray cluster address (default: local Ray)")
        sp.add_argument("--num-cpus", type=int, default=0, help="CPUs for a local Ray (default: all)")
        sp.add_argument("--no-resume", action="store_true", help="redo the stage even if its output is complete")
        sp.add_argument("overrides", nargs="*", metavar="key=value")
    return parser


def add_pipeline_args(p: argparse.ArgumentParser) -> None:
    """Arguments shared by `inetseg pipeline` and jobs/full_pipeline.py."""
    p.add_argument("--preset", default="demo", help="starting config: demo (default, offline, minutes on "
                                                    "a laptop), real (your photos on a laptop: source=DIR), "
                                                    "paper (the paper's settings, GPU cluster), none")
    p.add_argument("--config", help="YAML file merged over the preset")
    p.add_argument("--out", help="output root, local path or s3://, gs:// URI (same as out=...)")
    p.add_argument("--print-config", action="store_true",
                   help="print the config (preset + file + overrides; empty paths follow out=) and exit")
    p.add_argument("overrides", nargs="*", metavar="key=value")


TUNE_HELP = """Search pipeline keys with Ray Tune (Optuna TPE + ASHA by default). The stages before the first tuned
key run once; each trial re-runs only the stages its values change, in folders shared by trials that agree so far.
Trials are scored by a label-free objective on validation images nothing trains on (split.val_share; see
inetseg/tuning.py), or with tune.objective=val_miou tune.val=DIR by the mIoU on a labelled folder (never the test
split). A killed search resumes where it stopped. Writes <out>/tune/best.yaml (run it: inetseg pipeline --preset P
--config best.yaml), trials.json, summary.json, and an MLflow parent run with a nested run per trial.

examples:
  inetseg tune                                            # the demo, the default space, 12 trials
  inetseg tune --tune jobs/configs/tune.yaml tune.num_samples=20
  inetseg tune --preset real source=DIR test=DIR tune.objective=val_miou tune.val=VALDIR"""


def add_tune_args(p: argparse.ArgumentParser) -> None:
    """Arguments of `inetseg tune` and jobs/tune.py: the pipeline's, plus the tune file."""
    add_pipeline_args(p)
    p.add_argument("--tune", dest="tune_file", help="YAML with tune keys (space:, num_samples:, ...)")


def run_tune(args: argparse.Namespace) -> int:
    """Split tune.* keys from pipeline keys, run the search, print the best values."""
    from inetseg import pipeline, storage
    from inetseg.stages import tune

    tune_keys = [o[len("tune."):] for o in args.overrides if o.startswith("tune.")]
    overrides = [o for o in args.overrides if not o.startswith("tune.")] + ([f"out={args.out}"] if args.out else [])
    user = pipeline.load_config(args.preset, args.config, overrides, resolve=False)
    cfg = pipeline.load_config(args.preset, args.config, overrides)
    tcfg = C.load(TuneConfig, args.tune_file, tune_keys)
    tcfg.out = storage.absolute(tcfg.out or storage.join(cfg.out, "tune"))
    if args.print_config:
        print(C.dump_yaml(tcfg))
        return 0
    from inetseg.stages.common import ensure_ray

    ensure_ray(cfg.ray_address, cfg.num_cpus, quiet=True)  # a line per trial instead of Ray's progress output
    summary = tune.run_search(tcfg, cfg, C.to_dict(user, internal_keys=False))
    print(f"best objective {summary['best_objective']:.4f} ({summary['finished']} of {summary['trials']} trials "
          f"finished, {summary['stopped_early']} stopped early, {summary['failed']} failed)")
    for key, value in summary["best"].items():
        print(f"  {key} = {value}")
    print(f"run it: inetseg pipeline --preset {args.preset} --config {summary['best_yaml']}")
    return 0


def add_models_args(sub: typing.Any) -> None:
    """`inetseg models list|promote`: the registered segmenter's versions and its champion alias."""
    mp = sub.add_parser("models", help="list the registered segmenter's versions; move its champion alias",
                        description="The segmenters pipeline runs registered in MLflow (a version per run, tagged "
                                    "with its mIoU). `inetseg segment model=models:/NAME@champion` reads the "
                                    "champion; the first version gets it, `promote` moves it.",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog="examples:\n  inetseg models list --mlflow-uri runs/demo\n"
                               "  inetseg models promote 3 --mlflow-uri runs/demo")
    mp.add_argument("action", choices=("list", "promote"),
                    help="list: every version, its mIoU, aliases and run; promote VERSION: point --alias at it")
    mp.add_argument("version", nargs="?", default="", help="promote: the version to point the alias at")
    mp.add_argument("--mlflow-uri", default="", help="tracking URI, or a run folder (its mlflow.db); "
                                                     "default: MLFLOW_TRACKING_URI, else ./mlflow.db")
    mp.add_argument("--name", default=C.REGISTERED_MODEL, help=f"registered model (default: {C.REGISTERED_MODEL})")
    mp.add_argument("--alias", default=CHAMPION, help=f"promote: the alias to move (default: {CHAMPION})")


def run_models(args: argparse.Namespace) -> int:
    """List the registered model's versions, or point an alias at one."""
    from inetseg import tracking

    uri = tracking.resolve_uri(args.mlflow_uri)
    if args.action == "promote":
        if not args.version.isdigit():
            raise C.ConfigError("models promote needs a version number: inetseg models promote VERSION")
        tracking.promote(uri, args.name, args.version, args.alias)
        print(f"models:/{args.name}@{args.alias} -> models:/{args.name}/{args.version}")
        return 0
    print(f"{'version':>7}  {'mIoU':>6}  {'aliases':<16} run")
    for v in tracking.model_versions(uri, args.name):
        miou = f"{100 * float(v['miou']):5.1f}%" if v["miou"] else "   n/a"
        print(f"{v['version']:>7}  {miou:>6}  {','.join(v['aliases']):<16} {v['run_id']}")
    return 0


def run_pipeline(args: argparse.Namespace) -> int:
    """Resolve the config, run, print the summary table."""
    from inetseg import pipeline

    overrides = list(args.overrides) + ([f"out={args.out}"] if args.out else [])
    if args.print_config:  # before path resolution: a file to edit, whose paths still follow `out`
        print(C.dump_yaml(pipeline.load_config(args.preset, args.config, overrides, resolve=False)))
        return 0
    cfg = pipeline.load_config(args.preset, args.config, overrides)
    summary = pipeline.run(cfg)
    print(pipeline.format_table(summary))
    print(f"summary: {cfg.out}/summary.json")
    return 0


def required_keys(name: str, cfg: typing.Any) -> tuple[str, ...]:
    """The first of the stage's ways to run whose keys are all set; else ConfigError naming what is missing."""
    missing = []
    for keys in registry.get(name).required:
        lacking = [k for k in keys if not getattr(cfg, k)]
        if not lacking:
            return keys
        missing.append(", ".join(k + "=..." for k in lacking))
    raise C.ConfigError(f"{name} needs {' or '.join(missing)}")


def run_stage(args: argparse.Namespace) -> int:
    """One stage on its own: its config from --config/key=value, Ray started when the stage needs it."""
    import json

    from inetseg import storage

    stage = registry.get(args.command)
    cfg = C.load(stage.config, args.config, args.overrides, section=stage.name)
    for key in required_keys(stage.name, cfg):  # fail on a missing input before paying for a Ray start
        value = getattr(cfg, key)
        if key not in ("out", "tags") and not storage.is_model_uri(value) and not storage.exists(value):
            raise FileNotFoundError(f"{stage.name}: {key}={value} does not exist")
    module = stage.module()
    if hasattr(module, "check"):  # a stage's own input checks, before paying for a Ray start
        module.check(cfg)
    if stage.ray:
        from inetseg.stages.common import ensure_ray

        ensure_ray(args.ray_address, args.num_cpus)
    result = stage.function()(cfg, not args.no_resume)
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


def job(command: str, prog: str, doc: str, add_args: typing.Callable[[argparse.ArgumentParser], None],
        argv: list[str]) -> int:
    """A Ray Job entry point (jobs/*.py): its own --help (the job's docstring), then `inetseg <command> argv`."""
    parser = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=f"All keys: `inetseg {command} --help`.")
    add_args(parser)
    parser.parse_args(argv)
    return main([command, *argv])


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `inetseg` console script; user mistakes exit 2 with one line."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(next((a for a in argv if not a.startswith("-")), None))
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        if args.command == "fake-flickr":
            return serve_fake_flickr(args)
        if args.command == "models":
            return run_models(args)
        if args.command == "tune":
            return run_tune(args)
        return run_pipeline(args) if args.command == "pipeline" else run_stage(args)
    except (C.ConfigError, FileNotFoundError, DataSetError, MaskError, BusyError) as e:
        print(f"inetseg {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS):
            raise
        print(f"inetseg {args.command}: error: {e.strerror} ({e.filename or 'writing output'}); free space or fix "
              "the permission and run it again: finished stages are reused", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"inetseg {args.command}: interrupted; finished stages are kept and reused on re-run",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
