"""Configs of the stages that train or run the classifier: compute, classifier, filter, attention, segmenter."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from inetseg.config.core import check, internal


@dataclass
class ComputeConfig:
    """Where a stage runs: workers for Ray Train, actors for Ray Data pools."""

    num_workers: int = 1  # Ray Train workers (DDP ranks); one per GPU on a cluster
    use_gpu: bool = False  # Ray Train workers and inference actors take one GPU each
    cpus_per_worker: float = 1.0  # CPUs reserved per train worker / inference actor
    torch_threads: int = 0  # intra-op threads per worker; 0 = all cores of the node (CPU runs)
    amp: bool = True  # mixed precision; only takes effect on GPU
    backend: Literal["auto", "gloo", "nccl"] = "auto"  # DDP backend: auto = nccl on GPU, gloo on CPU
    # Ray Train workers: PACK, SPREAD, STRICT_PACK or STRICT_SPREAD (one per node)
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    num_actors: int = 1  # size of inference actor pools (filter, attention, predict, crf)
    inference_batch_size: int = 32  # images per batch in actor pools

    def validate(self, p: str = "") -> None:
        check(self.num_workers >= 1, f"{p}num_workers must be >= 1")
        check(self.num_actors >= 1, f"{p}num_actors must be >= 1")
        check(self.cpus_per_worker > 0, f"{p}cpus_per_worker must be > 0")
        check(self.inference_batch_size >= 1, f"{p}inference_batch_size must be >= 1")


def _check_training(cfg: ClassifierConfig | SegmenterConfig, p: str) -> None:
    """What every trained net's schedule must satisfy."""
    check(cfg.epochs >= 1, f"{p}epochs must be >= 1")
    check(cfg.batch_size >= 1, f"{p}batch_size must be >= 1")
    check(cfg.lr > 0, f"{p}lr must be > 0")
    check(cfg.input_size >= 32, f"{p}input_size must be >= 32")
    check(cfg.bn_recalibrate_images >= 0, f"{p}bn_recalibrate_images must be >= 0")


@dataclass
class ClassifierConfig:
    """GoogLeNet (weights=None) trained with Ray Train on the tagged images."""

    images: str = ""  # input image shards; default: the filtered images
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
    bn_recalibrate_images: int = 8192  # after the last epoch, BatchNorm statistics recomputed on this many (0 = off)
    # decode once and keep the pixels in the object store across epochs: on | off | auto (if they fit in 1/4 of it)
    cache_decoded: Literal["auto", "on", "off"] = "auto"
    seed: int = 0
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    # Set by the code, not by users (refused as keys, left out of --help and config.yaml):
    folds: int = internal(0)  # > 1: cross-fitting, train on every fold but `fold` (the out-of-fold filter)
    fold: int = internal(-1)  # the fold left out (0..folds-1)
    init_from: str = internal("")  # a classifier folder whose weights start training (classifier_from_filter)

    def validate(self, p: str = "") -> None:
        _check_training(self, p)
        check(0 < self.width <= 2, f"{p}width must be in (0, 2]")
        check(0 <= self.holdout_fraction < 0.5, f"{p}holdout_fraction must be in [0, 0.5)")
        check(self.checkpoint_every_steps >= 0 and self.checkpoint_every_epochs >= 1,
              f"{p}checkpoint_every_steps must be >= 0 and checkpoint_every_epochs >= 1")
        check(self.checkpoints_to_keep >= 1, f"{p}checkpoints_to_keep must be >= 1")
        check(self.folds == 0 or (self.folds >= 2 and 0 <= self.fold < self.folds),
              f"{p}fold must be in 0..folds-1 when folds >= 2")


@dataclass
class FilterConfig:
    """Rounds of train-a-classifier / score every image / drop by the paper's rules (Eqn 13, 14, 15)."""

    images: str = ""  # input image shards; default: the ingest output
    out: str = ""  # output folder: round1/, round2/, ... each with classifier(s), scores/, images/
    rounds: int = 3  # how many of the paper's rounds run, in order: Eqn 13, Eqn 14, Eqn 15 (0 = no filtering)
    eqn13_threshold: float = 0.1  # round 1 drops P(tag) <= this
    eqn14_top_k: int = 3  # round 2 drops images whose tag is not in the top k classes
    eqn15_threshold: float = 0.6  # round 3 drops P(tag) <= this
    mode: Literal["paper", "oof"] = "paper"  # paper: each round's model scores its own images | oof: cross-fitted
    folds: int = 3  # oof: k models per round, each scoring the fold it never trained on
    warm_start: bool = True  # rounds 2.. start from the previous round's model (same fold), not from random
    train: ClassifierConfig = field(default_factory=ClassifierConfig)  # the round classifiers (images/out unused)
    compute: ComputeConfig = field(default_factory=ComputeConfig)  # the scoring actor pool

    def validate(self, p: str = "") -> None:
        check(0 <= self.rounds <= 3, f"{p}rounds must be in 0..3")
        check(self.mode != "oof" or self.folds >= 2, f"{p}folds must be >= 2 in oof mode")
        check(0 <= self.eqn13_threshold < 1 and 0 <= self.eqn15_threshold < 1,
              f"{p}eqn13/15 thresholds must be in [0, 1)")
        check(self.eqn14_top_k >= 1, f"{p}eqn14_top_k must be >= 1")


@dataclass
class AttentionConfig:
    """Class attention (CAM Eqn 5 + excitation backprop Eqn 6-8) -> segment smoothing (Eqn 9) -> trimap
    (Eqn 10) -> pseudo-label shards. The fields from `maps` on are attention.maps.Method's, by name."""

    images: str = ""  # input: the filtered image shards
    model: str = ""  # classifier folder
    out: str = ""  # pseudo-label shards; default: <pipeline out>/pseudo
    input_size: int = 224  # network input side for attention
    maps: Literal["forward", "backward", "fused"] = "fused"  # CAM only | B_2 * B_3b only | both (Eqn 8)
    lambda1: float = 1.0  # Eqn 8: weight of the forward CAM
    lambda2: float = 1.0  # Eqn 8: weight of the excitation product
    # CAM scaled to [0, 1] before Eqn 8: max (ReLU, / peak) | minmax (minus floor, / range)
    cam_norm: Literal["max", "minmax"] = "minmax"
    # excitation backprop: ignore biases (conserves probability) | absorb them (footnote 4)
    eb_bias: Literal["ignore", "absorb"] = "ignore"
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
    # Where Eqn 9-10 run: inside the attention actors | in CPU tasks after them | auto = tasks when the actors
    # hold GPUs (the segments are CPU work that would leave the GPU idle), actors otherwise
    postprocess: Literal["auto", "actor", "tasks"] = "auto"
    compute: ComputeConfig = field(default_factory=ComputeConfig)

    def validate(self, p: str = "") -> None:
        check(self.objectness >= 0, f"{p}objectness must be >= 0")
        check(self.input_size >= 32, f"{p}input_size must be >= 32")
        check(0 <= self.delta_background <= self.delta_object <= 1,
              f"{p}need 0 <= delta_background <= delta_object <= 1")


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
    # Set by the code (online fine-tuning), not by users:
    init_from: str = internal("")  # a segmenter folder whose weights start training ('' = from the classifier)
    extra_pseudo: list[str] = internal([])  # further pseudo-label tables trained on together with `pseudo`

    def validate(self, p: str = "") -> None:
        _check_training(self, p)


@dataclass
class SplitConfig:
    """The filtered images cut by a hash of their id: the share online fine-tuning keeps back (the paper: 20k of
    680k), optionally a validation share nothing trains on (tuning), and the rest that the classifier, attention
    and the first segmenter train on."""

    images: str = ""  # the filtered image shards
    out: str = ""  # train/ and heldout/ image tables; default: <pipeline out>/split
    share: float = 0.03  # of the filtered images kept back for fine-tuning (0 = none: fine-tuning off)
    # of the filtered images kept out of every training, for `inetseg tune`'s label-free objective (val/); 0 = none
    val_share: float = 0.0

    def validate(self, p: str = "") -> None:
        check(0 <= self.share < 0.5, f"{p}share must be in [0, 0.5)")
        check(0 <= self.val_share < 0.5, f"{p}val_share must be in [0, 0.5)")


@dataclass
class FinetuneConfig:
    """Online fine-tuning (Section 3.2, Eqn 11-12): the segmenter labels the held-out images, the classifier
    keeps those whose segmented object it still names, and the segmenter trains on again on them."""

    enabled: bool = False  # run the split and finetune stages in the pipeline
    images: str = ""  # the held-out image shards (split's heldout/)
    classifier: str = ""  # the classifier folder (Eqn 12's check)
    model: str = ""  # the segmenter to start from
    pseudo: str = ""  # its pseudo labels, trained on again together with the new ones (include_initial)
    out: str = ""  # round1/, round2/, ... (scored/, pseudo/, segmenter/); the last round's model is the output
    rounds: int = 1  # the paper: one
    mu: float = 0.4  # Eqn 12: keep an image when P(tag | I.M) > mu
    include_initial: bool = True  # fine-tune on the initial pseudo labels too (else on the new ones only)
    # The fine-tuning schedule is the one the segmenter was trained with (its meta.json records it: input size,
    # batch, lr, compute, ...); the images are labelled and scored at the two models' own input sizes.
    epochs: int = 0  # 0 = as many as the segmenter was trained for
    lr: float = 0.0  # 0 = the segmenter's learning rate
    # The new pseudo labels: "paper" = the segmenter's tag probability through Eqn 9 and Eqn 10 (the settings
    # below, the attention stage's meaning and defaults); "region" = Eqn 11's M itself, nothing ignored.
    labels: Literal["paper", "region"] = "paper"
    smoothing: bool = True
    segment_scale: float = 100.0
    segment_sigma: float = 0.8
    segment_min_size: int = 20
    trimap: bool = True
    delta_object: float = 0.65
    delta_background: float = 0.5
    compute: ComputeConfig = field(default_factory=ComputeConfig)  # the labelling actor pool

    def validate(self, p: str = "") -> None:
        check(self.rounds >= 1, f"{p}rounds must be >= 1")
        check(0 <= self.mu < 1, f"{p}mu must be in [0, 1)")
        check(self.epochs >= 0 and self.lr >= 0, f"{p}epochs and lr must be >= 0 (0 = the segmenter's)")
        check(0 <= self.delta_background <= self.delta_object <= 1,
              f"{p}need 0 <= delta_background <= delta_object <= 1")
