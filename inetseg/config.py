"""Typed configuration: one dataclass per stage, YAML files plus key=value overrides."""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml


class ConfigError(ValueError):
    """A user mistake in a config file or override; the CLI prints it as one line, exit 2."""


@dataclass
class ComputeConfig:
    """Where a stage runs: workers for Ray Train, actors for Ray Data pools."""

    num_workers: int = 1  # Ray Train workers (DDP ranks); one per GPU on a cluster
    use_gpu: bool = False  # Ray Train workers and inference actors take one GPU each
    cpus_per_worker: float = 1.0  # CPUs reserved per train worker / inference actor
    torch_threads: int = 0  # intra-op threads per worker; 0 = all cores of the node (CPU runs)
    amp: bool = True  # mixed precision; only takes effect on GPU
    backend: str = "auto"  # DDP backend: auto = nccl on GPU, gloo on CPU
    placement_strategy: str = "PACK"  # Ray Train workers: PACK, SPREAD, STRICT_PACK or STRICT_SPREAD (one per node)
    num_actors: int = 1  # size of inference actor pools (filter, attention, predict, crf)
    inference_batch_size: int = 32  # images per batch in actor pools


@dataclass
class SynthConfig:
    """The offline synthetic noisy 'web search' corpus."""

    out: str = ""  # corpus folder; default: <pipeline out>/corpus
    num_classes: int = 5  # K object classes, 1..20
    images_per_class: int = 300  # search results per tag
    test_images: int = 150  # clean held-out images with GT masks
    heldout_images: int = 0  # extra search results kept back for online fine-tuning (later issue)
    image_size: int = 128  # side of the square images
    seed: int = 0  # everything is deterministic given this
    p_wrong_tag: float = 0.12  # tag names a class that is not in the image
    p_no_object: float = 0.10  # no object at all, clutter only
    p_multi: float = 0.15  # the tagged object plus an object of another class
    p_small_or_cut: float = 0.12  # the tagged object is small or cut by the border


@dataclass
class CrawlConfig:
    """flickr.photos.search per tag through flickrapi, sliced by upload date -> a URL manifest."""

    out: str = ""  # crawl folder: cursor (finished windows) and manifest.parquet
    tags: list[str] = field(default_factory=list)  # one search tag per class, in label order
    text: str = ""  # optional free-text query added to every search
    per_tag: int = 48000  # target photos per tag (paper: ~48k)
    rest_url: str = "https://api.flickr.com/services/rest/"  # a fake-flickr URL for offline runs
    credentials_file: str = ""  # YAML/JSON with api_key / api_secret; else FLICKR_API_KEY / FLICKR_API_SECRET
    license: str = ""  # Flickr license ids, comma-separated; '' = any
    safe_search: int = 1  # 1 = safe
    min_upload_date: int = 1104537600  # 2005-01-01 (unix seconds)
    max_upload_date: int = 0  # 0 = now
    per_page: int = 500  # Flickr's maximum
    max_results_per_query: int = 4000  # Flickr returns no more than this per query: windows are split below it
    calls_per_hour: float = 3600  # rate limit per API key
    max_retries: int = 6  # on 5xx, 429 and time-outs, with exponential backoff and jitter
    backoff_seconds: float = 1.0  # first retry delay; doubles each time
    timeout_seconds: float = 30.0  # per API call
    ambiguous: str = "drop"  # a photo found under two tags: drop | keep (first tag wins)


@dataclass
class IngestConfig:
    """Folder-per-tag images -> validated, resized, re-encoded Parquet image shards."""

    source: str = ""  # folder-per-tag tree (sub-folder name = tag); default: <corpus>/search
    out: str = ""  # image shard folder; default: <pipeline out>/images
    classes: list[str] = field(default_factory=list)  # tags to keep, in label order; [] = all sub-folders sorted
    max_side: int = 500  # resize so the longer side is at most this (VOC-like)
    min_side: int = 32  # smaller images are rejected as 'too_small'
    max_aspect: float = 4.0  # more elongated images are rejected as 'bad_aspect'
    max_pixels: int = 50_000_000  # decompression-bomb limit on the decoded size
    jpeg_quality: int = 90  # re-encoding quality
    rows_per_shard: int = 1000  # mean rows per shard; a shard is one task, one Parquet file, resumed whole
    files_per_task: int = 64  # files fetched + decoded per batch inside a shard task (one Parquet row group)
    dedupe: bool = True  # set exact (SHA-1) and near (pHash) duplicates aside
    dedupe_max_distance: int = 2  # pHash bits two images may differ by and still be duplicates; -1 = exact only
    ambiguous: str = "drop"  # one picture under two tags: drop all copies | keep the first id's copy
    # Downloads (when source is a crawl's URL manifest):
    download_threads: int = 16  # concurrent fetches inside each Ray Data task
    per_host_concurrency: int = 8  # requests in flight per host per task (image hosts answer 429 readily)
    timeout_seconds: float = 20.0  # per request
    download_retries: int = 2  # on 5xx, 429 and network errors, with backoff
    max_bytes: int = 20_000_000  # larger bodies are refused as 'too_large'
    allow_private_hosts: bool = False  # SSRF guard off: only for loopback test servers


@dataclass
class ClassifierConfig:
    """GoogLeNet (weights=None) trained with Ray Train on the tagged images."""

    images: str = ""  # input image shards; default: the ingest output
    out: str = ""  # model folder; default: <pipeline out>/classifier
    width: float = 1.0  # channel multiplier; 1.0 = torchvision's GoogLeNet exactly
    input_size: int = 224  # training crop side
    epochs: int = 30  # passes over the images
    batch_size: int = 512  # global batch (split across workers)
    lr: float = 0.02  # base learning rate (paper)
    lr_decay: float = 0.96  # multiply lr by this ...
    lr_decay_steps: int = 6400  # ... every this many steps (paper)
    momentum: float = 0.9
    weight_decay: float = 0.0004
    max_steps: int = 32000  # stop after this many SGD steps (paper: 32k)
    holdout_fraction: float = 0.05  # slice of images held out for accuracy
    checkpoint_every_epochs: int = 1  # checkpoint at the end of every this many epochs ...
    checkpoint_every_steps: int = 0  # ... and every this many SGD steps (0 = epoch ends only)
    checkpoints_to_keep: int = 2  # newest checkpoints kept in storage_path
    storage_path: str = ""  # Ray Train run storage (local or s3://); default: <out>_ray_train
    max_failures: int = 2  # Ray Train restarts from the newest checkpoint after a worker dies
    folds: int = 0  # > 1: cross-fitting, train on every fold but `fold` (set by the out-of-fold filter)
    fold: int = -1  # the fold left out (0..folds-1)
    init_from: str = ""  # a classifier folder of this pipeline whose weights start training ('' = random init)
    bn_recalibrate_images: int = 8192  # after the last epoch, BatchNorm statistics recomputed on this many (0 = off)
    # decode once and keep the pixels in the object store across epochs: on | off | auto (if they fit in 1/4 of it)
    cache_decoded: str = "auto"
    seed: int = 0
    compute: ComputeConfig = field(default_factory=ComputeConfig)


@dataclass
class FilterConfig:
    """Rounds of train-a-classifier / score every image / drop by the paper's rules (Eqn 13, 14, 15)."""

    images: str = ""  # input image shards; default: the ingest output
    out: str = ""  # output folder: round1/, round2/, ... each with classifier(s), scores/, images/
    rounds: int = 3  # how many of the paper's rounds run, in order: Eqn 13, Eqn 14, Eqn 15 (0 = no filtering)
    eqn13_threshold: float = 0.1  # round 1 drops P(tag) <= this
    eqn14_top_k: int = 3  # round 2 drops images whose tag is not in the top k classes
    eqn15_threshold: float = 0.6  # round 3 drops P(tag) <= this
    mode: str = "paper"  # paper: each round's model scores its own training images | oof: cross-fitted
    folds: int = 3  # oof: k models per round, each scoring the fold it never trained on
    warm_start: bool = True  # rounds 2.. start from the previous round's model (same fold), not from random
    train: ClassifierConfig = field(default_factory=ClassifierConfig)  # the round classifiers (images/out unused)
    compute: ComputeConfig = field(default_factory=ComputeConfig)  # the scoring actor pool


@dataclass
class AttentionConfig:
    """Class attention (CAM Eqn 5 + excitation backprop Eqn 6-8) -> segment smoothing (Eqn 9) -> trimap
    (Eqn 10) -> pseudo-label shards."""

    images: str = ""  # input: the filtered image shards
    model: str = ""  # classifier folder
    out: str = ""  # pseudo-label shards; default: <pipeline out>/pseudo
    input_size: int = 224  # network input side for attention
    maps: str = "fused"  # forward (CAM only) | backward (B_2 * B_3b only) | fused (Eqn 8)
    lambda1: float = 1.0  # Eqn 8: weight of the forward CAM
    lambda2: float = 1.0  # Eqn 8: weight of the excitation product
    cam_norm: str = "minmax"  # CAM scaled to [0, 1] before Eqn 8: max (ReLU, / peak) | minmax (minus floor, / range)
    eb_bias: str = "ignore"  # excitation backprop: ignore biases (conserves probability) | absorb them (footnote 4)
    smoothing: bool = True  # Eqn 9: average the attention over unsupervised segments
    segment_scale: float = 100.0  # Felzenszwalb segments: larger -> larger segments
    segment_sigma: float = 0.8  # Felzenszwalb: Gaussian pre-smoothing of the image
    segment_min_size: int = 20  # Felzenszwalb: smallest segment in pixels
    trimap: bool = True  # Eqn 10; false: one cut at delta_background, nothing ignored
    # Beyond the paper: weight of an unsupervised objectness prior (boundary connectivity over the Eqn 9
    # segments; attention/objectness.py) averaged with the attention before Eqn 9. 0 = the paper's method.
    objectness: float = 0.0
    delta_object: float = 0.65  # Eqn 10: attention above this -> the tag's class (paper's delta2, read as swapped)
    delta_background: float = 0.5  # Eqn 10: attention at or below this -> background; between -> 255 ignore
    compute: ComputeConfig = field(default_factory=ComputeConfig)


@dataclass
class SegmenterConfig:
    """DeepLab-style head on the classifier's backbone, trained on pseudo labels."""

    pseudo: str = ""  # pseudo-label shards; default: the attention output
    model: str = ""  # classifier folder whose backbone initialises the segmenter
    out: str = ""  # model folder; default: <pipeline out>/segmenter
    input_size: int = 321  # training crop side
    epochs: int = 20
    batch_size: int = 12  # global batch (paper: 12)
    lr: float = 0.01
    lr_head_mult: float = 10.0  # the new head learns faster than the initialised backbone
    momentum: float = 0.9
    weight_decay: float = 0.0005
    max_steps: int = 50000  # paper: 50k iterations
    aspp_rates: list[int] = field(default_factory=lambda: [6, 12, 18])  # ASPP dilation rates
    bn_recalibrate_images: int = 8192  # after the last epoch, BatchNorm statistics recomputed on this many (0 = off)
    checkpoint_every_epochs: int = 1
    max_failures: int = 2
    seed: int = 0
    compute: ComputeConfig = field(default_factory=ComputeConfig)


@dataclass
class PredictConfig:
    """Run the segmenter over the test split."""

    test: str = ""  # test table folder; default: <pipeline out>/test
    model: str = ""  # segmenter folder
    out: str = ""  # predictions; default: <pipeline out>/predictions
    input_size: int = 321  # network input side: each image letterboxed into it (predictions resized back)
    flip: bool = False  # average the logits of the image and its mirror (test-time flip)
    one_class: bool = False  # one object class per image: all object probability to the image's likeliest class
    compute: ComputeConfig = field(default_factory=ComputeConfig)


@dataclass
class CRFParams:
    """The dense CRF's own settings (what inetseg.crf reads), shared by the crf stage and `segment`."""

    iterations: int = 10  # mean-field steps
    gaussian_sxy: float = 3.0  # smoothness kernel width (pixels)
    gaussian_compat: float = 3.0  # smoothness kernel weight
    bilateral_sxy: float = 50.0  # appearance kernel width (pixels)
    bilateral_srgb: float = 13.0  # appearance kernel colour width
    bilateral_compat: float = 4.0  # appearance kernel weight
    reference_side: int = 500  # the sxy widths are for images this long; scaled to each image (0 = pixels as given)


@dataclass
class CRFConfig(CRFParams):
    """Dense CRF post-processing of the predictions (pydensecrf)."""

    predictions: str = ""  # input predictions; default: the predict output
    out: str = ""  # refined predictions; default: <pipeline out>/crf
    enabled: bool = True  # run the stage in the pipeline
    compute: ComputeConfig = field(default_factory=ComputeConfig)  # (the stage uses one CPU per task)


@dataclass
class EvaluateConfig:
    """mIoU on the clean test split (a predictions table), or of predicted mask files against a data set."""

    predictions: str = ""  # prediction folder to score; default: CRF output (or predict if CRF off)
    out: str = ""  # metrics folder; default: <pipeline out>/eval
    grid_images: int = 6  # test images in the MLflow PNG grid
    pred: str = ""  # instead of predictions=: a folder of predicted mask PNGs (0 = background, 1..K = classes)
    gt: str = ""  # ground truth for pred=: a folder (images/ + masks/, or masks only) or a VOCdevkit / VOC2012 tree
    classes: list[str] = field(default_factory=list)  # the run's classes (pred ids 1..K); default: classes.json beside pred
    split: str = "val"  # VOC only: the ImageSets/Segmentation/<split>.txt to score
    # Ground-truth classes the run does not have: 'background' (scored as 0: the run only knows its
    # classes and background, so calling a sofa 'cat' must count as an error) or 'ignore' (not scored).
    others: str = "background"
    allow_missing: bool = False  # score only the gt masks that have a prediction (else a missing one is an error)


@dataclass
class SegmentConfig:
    """A trained segmenter over a user's own photos -> palette masks, overlays, optional probabilities."""

    model: str = ""  # trained segmenter folder (a run's segmenter/: model.pt + meta.json)
    images: str = ""  # one photo, or a folder searched recursively (jpg jpeg png gif bmp webp tif tiff)
    out: str = ""  # output folder: masks/, overlays/, probs/, classes.json, summary.json, failed.json
    classes: list[str] = field(default_factory=list)  # names of ids 1..K; [] = the model's meta.json (or its run)
    input_size: int = 0  # network input side; 0 = the side the segmenter was trained at (meta.json)
    probs: bool = False  # also write probs/<name>.npy: float16 softmax, (K+1) x H x W
    flip: bool = False  # average the logits of the photo and its mirror (test-time flip)
    one_class: bool = False  # one object class per photo: all object probability to its likeliest class
    crf: bool = False  # refine each mask with the dense CRF (crf_params)
    crf_params: CRFParams = field(default_factory=CRFParams)  # the CRF's iterations and kernels
    overlay_alpha: float = 0.5  # weight of the class colour where an overlay pixel is labelled
    jpeg_quality: int = 90  # overlay JPEG quality
    max_pixels: int = 50_000_000  # larger photos are skipped as 'too_many_pixels' (decompression bombs)
    # Photos arrive at full size (a 12 MP photo is 36 MB decoded, ~0.3 GB of probabilities): small batches.
    compute: ComputeConfig = field(default_factory=lambda: ComputeConfig(inference_batch_size=4))


@dataclass
class PipelineConfig:
    """The whole run: where it writes, how it tracks, and every stage's settings."""

    out: str = "runs/default"  # output root: local path or s3:// / gs:// URI
    source: str = "synth"  # synth = the offline corpus; otherwise a folder-per-tag tree
    test: str = ""  # with a non-synth source: a folder with images/ and masks/ (class ids) + classes.json
    ray_address: str = ""  # '' = start a local Ray (or join RAY_ADDRESS); 'auto' = existing cluster
    num_cpus: int = 0  # local Ray only: CPUs to give it; 0 = all
    mlflow_uri: str = ""  # '' = MLFLOW_TRACKING_URI, else sqlite under <out>
    experiment: str = "inetseg"  # MLflow experiment name
    run_name: str = ""  # MLflow parent run name; '' = generated
    resume: bool = True  # skip stages whose output is complete with the same config
    # The final classifier starts from the last filter round's model instead of from random weights
    # (filter.mode=paper): the rounds already trained it on (nearly) the same images, so fewer epochs reach
    # further. Beyond the paper; on by the real preset, where 2.4k photos leave a from-scratch net weak.
    classifier_from_filter: bool = False
    seed: int = 0  # the run's seed: every stage seed left at 0 takes it (repeat a run over seeds with seed=1, 2, ...)
    synth: SynthConfig = field(default_factory=SynthConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    crf: CRFConfig = field(default_factory=CRFConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)


STAGE_CONFIGS: dict[str, type] = {
    "synth": SynthConfig,
    "crawl": CrawlConfig,
    "ingest": IngestConfig,
    "classifier": ClassifierConfig,
    "filter": FilterConfig,
    "attention": AttentionConfig,
    "segmenter": SegmenterConfig,
    "predict": PredictConfig,
    "crf": CRFConfig,
    "evaluate": EvaluateConfig,
    "segment": SegmentConfig,
    "pipeline": PipelineConfig,
}


# ---------------------------------------------------------------- building from dicts

def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert one value against a field type; raise ConfigError naming the key."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, prefix=where + ".")
    if origin in (list, typing.List):
        (item_tp,) = typing.get_args(tp) or (Any,)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v != ""]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
            return False
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            out = tp(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}") from None
        if tp is int and isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return out
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return "" if value is None else str(value)
    return value


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build dataclass `cls` from a (nested) dict; unknown keys raise ConfigError."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config key '{prefix}{unknown[0]}' (valid: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    obj = cls(**kwargs)
    validate(obj, prefix)
    return obj


def to_dict(obj: Any) -> dict:
    """The dataclass as a plain nested dict (for YAML, JSON and MLflow params); a dict passes through."""
    return dict(obj) if isinstance(obj, dict) else dataclasses.asdict(obj)


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists become comma-joined strings."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, list):
            out[key] = ",".join(str(x) for x in v)
        else:
            out[key] = v
    return out


def parse_overrides(pairs: list[str]) -> dict:
    """['a.b=3', 'c=x'] -> {'a': {'b': '3'}, 'c': 'x'} (values typed later against the schema)."""
    out: dict = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"override '{pair}' is not key=value")
        key, value = pair.split("=", 1)
        if not key:
            raise ConfigError(f"override '{pair}' has an empty key")
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{pair}' conflicts with another override")
        node[parts[-1]] = _yaml_scalar(value)
    return out


def _yaml_scalar(text: str) -> Any:
    """Parse an override value the way YAML would ('3' -> 3, '[1,2]' -> [1, 2], 'a' -> 'a')."""
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


def deep_merge(base: dict, extra: dict) -> dict:
    """Recursive dict merge; `extra` wins."""
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def read_yaml(path: str) -> dict:
    """Read a YAML config file (local or cloud URI) into a dict."""
    from inetseg import storage

    if not storage.exists(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(storage.read_text(path)) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top")
    return data


def load(cls: type, config_file: str | None = None, overrides: list[str] | None = None,
         section: str | None = None) -> Any:
    """Defaults <- YAML file (or its `section` when the file is a pipeline config) <- key=value."""
    data: dict = {}
    if config_file:
        data = read_yaml(config_file)
        if section and section in data and isinstance(data[section], dict) and cls is not PipelineConfig:
            data = data[section]
    data = deep_merge(data, parse_overrides(overrides or []))
    return from_dict(cls, data)


def dump_yaml(obj: Any) -> str:
    """The resolved config as YAML (saved with every run)."""
    return yaml.safe_dump(to_dict(obj), sort_keys=False)


def fingerprint(obj: Any) -> str:
    """A stable hash of a config, used to decide whether a finished stage can be reused."""
    import hashlib

    blob = json.dumps(to_dict(obj), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# ---------------------------------------------------------------- value checks

def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def validate(obj: Any, prefix: str = "") -> None:
    """Range checks with messages that name the key."""
    p = prefix
    if isinstance(obj, ComputeConfig):
        _check(obj.num_workers >= 1, f"{p}num_workers must be >= 1")
        _check(obj.num_actors >= 1, f"{p}num_actors must be >= 1")
        _check(obj.cpus_per_worker > 0, f"{p}cpus_per_worker must be > 0")
        _check(obj.inference_batch_size >= 1, f"{p}inference_batch_size must be >= 1")
        _check(obj.backend in ("auto", "gloo", "nccl"), f"{p}backend must be auto, gloo or nccl")
        _check(obj.placement_strategy in ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"),
               f"{p}placement_strategy must be PACK, SPREAD, STRICT_PACK or STRICT_SPREAD")
    elif isinstance(obj, SynthConfig):
        _check(1 <= obj.num_classes <= 20, f"{p}num_classes must be in 1..20")
        _check(obj.images_per_class >= 1, f"{p}images_per_class must be >= 1")
        _check(obj.image_size >= 48, f"{p}image_size must be >= 48")
        total = obj.p_wrong_tag + obj.p_no_object + obj.p_multi + obj.p_small_or_cut
        _check(all(0 <= v <= 1 for v in (obj.p_wrong_tag, obj.p_no_object, obj.p_multi, obj.p_small_or_cut))
               and total <= 1, f"{p}p_* noise shares must be in [0, 1] and sum to at most 1")
    elif isinstance(obj, CrawlConfig):
        _check(obj.per_tag >= 1, f"{p}per_tag must be >= 1")
        _check(1 <= obj.per_page <= 500, f"{p}per_page must be in 1..500")
        _check(obj.calls_per_hour > 0, f"{p}calls_per_hour must be > 0")
        _check(obj.ambiguous in ("drop", "keep"), f"{p}ambiguous must be drop or keep")
        _check(obj.max_results_per_query >= obj.per_page, f"{p}max_results_per_query must be >= per_page")
    elif isinstance(obj, IngestConfig):
        _check(obj.max_side >= obj.min_side >= 1, f"{p}max_side must be >= min_side >= 1")
        _check(1 <= obj.jpeg_quality <= 100, f"{p}jpeg_quality must be in 1..100")
        _check(obj.rows_per_shard >= 1 and obj.files_per_task >= 1, f"{p}rows_per_shard/files_per_task must be >= 1")
        _check(-1 <= obj.dedupe_max_distance <= 16, f"{p}dedupe_max_distance must be in -1..16")
        _check(obj.ambiguous in ("drop", "keep"), f"{p}ambiguous must be drop or keep")
    elif isinstance(obj, (ClassifierConfig, SegmenterConfig)):
        _check(obj.epochs >= 1, f"{p}epochs must be >= 1")
        _check(obj.batch_size >= 1, f"{p}batch_size must be >= 1")
        _check(obj.lr > 0, f"{p}lr must be > 0")
        _check(obj.input_size >= 32, f"{p}input_size must be >= 32")
        _check(obj.bn_recalibrate_images >= 0, f"{p}bn_recalibrate_images must be >= 0")
        if isinstance(obj, ClassifierConfig):
            _check(obj.cache_decoded in ("auto", "on", "off"), f"{p}cache_decoded must be auto, on or off")
            _check(0 < obj.width <= 2, f"{p}width must be in (0, 2]")
            _check(0 <= obj.holdout_fraction < 0.5, f"{p}holdout_fraction must be in [0, 0.5)")
            _check(obj.checkpoint_every_steps >= 0 and obj.checkpoint_every_epochs >= 1,
                   f"{p}checkpoint_every_steps must be >= 0 and checkpoint_every_epochs >= 1")
            _check(obj.checkpoints_to_keep >= 1, f"{p}checkpoints_to_keep must be >= 1")
            _check(obj.folds == 0 or (obj.folds >= 2 and 0 <= obj.fold < obj.folds),
                   f"{p}fold must be in 0..folds-1 when folds >= 2")
    elif isinstance(obj, FilterConfig):
        _check(0 <= obj.rounds <= 3, f"{p}rounds must be in 0..3")
        _check(obj.mode in ("paper", "oof"), f"{p}mode must be paper or oof")
        _check(obj.mode != "oof" or obj.folds >= 2, f"{p}folds must be >= 2 in oof mode")
        _check(0 <= obj.eqn13_threshold < 1 and 0 <= obj.eqn15_threshold < 1, f"{p}eqn13/15 thresholds must be in [0, 1)")
        _check(obj.eqn14_top_k >= 1, f"{p}eqn14_top_k must be >= 1")
    elif isinstance(obj, AttentionConfig):
        _check(obj.objectness >= 0, f"{p}objectness must be >= 0")
        _check(0 <= obj.delta_background <= obj.delta_object <= 1,
               f"{p}need 0 <= delta_background <= delta_object <= 1")
    elif isinstance(obj, CRFParams):
        _check(obj.iterations >= 1, f"{p}iterations must be >= 1")
        _check(obj.reference_side >= 0, f"{p}reference_side must be >= 0")
    elif isinstance(obj, EvaluateConfig):
        _check(obj.others in ("background", "ignore"), f"{p}others must be background or ignore")
        _check(not (obj.predictions and obj.pred), f"{p}predictions= and pred= are two ways to evaluate: give one")
        _check(bool(obj.pred) == bool(obj.gt), f"{p}pred= and gt= go together")
    elif isinstance(obj, SegmentConfig):
        _check(obj.input_size == 0 or obj.input_size >= 32, f"{p}input_size must be 0 (from the model) or >= 32")
        _check(0 <= obj.overlay_alpha <= 1, f"{p}overlay_alpha must be in [0, 1]")
        _check(1 <= obj.jpeg_quality <= 100, f"{p}jpeg_quality must be in 1..100")
        _check(obj.max_pixels >= 1, f"{p}max_pixels must be >= 1")
        _check(len(obj.classes) == len(set(obj.classes)), f"{p}classes must not repeat a name")
    elif isinstance(obj, PipelineConfig):
        _check(obj.num_cpus >= 0, f"{p}num_cpus must be >= 0")
        _check(not (obj.evaluate.pred or obj.evaluate.gt),
               f"{p}evaluate.pred / evaluate.gt score mask files with `inetseg evaluate`; the pipeline scores its own "
               "predictions (give test=DIR instead)")
        _check(not obj.classifier_from_filter or (obj.filter.rounds > 0 and obj.filter.mode == "paper"),
               f"{p}classifier_from_filter needs filter.rounds > 0 and filter.mode=paper (one model per round)")
