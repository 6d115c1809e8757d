"""Configs of the stages that use the trained segmenter: predict, CRF, evaluate and `segment`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from inetseg.config.core import check
from inetseg.config.training import ComputeConfig


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

    def validate(self, p: str = "") -> None:
        check(self.input_size >= 32, f"{p}input_size must be >= 32")


@dataclass
class CRFParams:
    """The dense CRF's own settings (what inetseg.crf reads), shared by the crf stage and `segment`.

    Defaults from jobs/bench/crf.py (results/crf.json): of 10 settings, the one with the highest smallest
    gain over five data sets, chosen on one hash half of each; on the other half, mIoU change in points:
    CamVid with coarse unaries from its true masks -0.03, the same with wandering boundaries +0.94, the
    demo's test predictions (two runs) +0.00 and -0.08, real-dev's held-out photos (a real-preset run) +0.38.
    No setting helps on plain CamVid or the demo: a CRF there trades thin and small objects for cleaner
    edges of big ones. The former DeepLab-like defaults (Gaussian 3 px / 3, bilateral 50 px / colour 13 / 4)
    cost 4.8, 0.9, 4.0 and 2.6 points on the first four and gave +1.3 on real-dev. A short-range,
    colour-tight bilateral kernel alone only snaps edges: the least harm. Photo presets (real, paper) set
    wider kernels that pay on big objects (presets.PHOTO_CRF).
    """

    iterations: int = 10  # mean-field steps
    gaussian_sxy: float = 3.0  # smoothness kernel width (pixels)
    gaussian_compat: float = 0.0  # smoothness kernel weight (0 = off: it only erodes thin objects here)
    bilateral_sxy: float = 20.0  # appearance kernel width (pixels)
    bilateral_srgb: float = 5.0  # appearance kernel colour width (0-255 scale)
    bilateral_compat: float = 2.0  # appearance kernel weight (0 = off)
    reference_side: int = 500  # the sxy widths are for images this long; scaled to each image (0 = pixels as given)

    def validate(self, p: str = "") -> None:
        check(self.iterations >= 1, f"{p}iterations must be >= 1")
        check(self.gaussian_sxy > 0 and self.bilateral_sxy > 0, f"{p}gaussian_sxy and bilateral_sxy must be > 0")
        check(self.bilateral_srgb > 0, f"{p}bilateral_srgb must be > 0")
        check(self.gaussian_compat >= 0 and self.bilateral_compat >= 0,
              f"{p}gaussian_compat and bilateral_compat must be >= 0 (0 = kernel off)")
        check(self.reference_side >= 0, f"{p}reference_side must be >= 0")


@dataclass
class CRFConfig(CRFParams):
    """Dense CRF post-processing of the predictions (pydensecrf)."""

    predictions: str = ""  # input predictions; default: the predict output
    out: str = ""  # refined predictions; default: <pipeline out>/crf
    enabled: bool = True  # run the stage in the pipeline
    # Ray Data tasks (pydensecrf is single-threaded and holds no model, so no actors): num_actors = tasks at
    # once, cpus_per_worker = CPUs each reserves (1 fits), inference_batch_size = images per task (their
    # float16 probabilities are in memory together: 8 VOC-sized images with 21 classes ~ 65 MB). GPU unused.
    compute: ComputeConfig = field(default_factory=lambda: ComputeConfig(inference_batch_size=8))

    def validate(self, p: str = "") -> None:
        super().validate(p)
        check(not self.compute.use_gpu, f"{p}compute.use_gpu: the dense CRF runs on CPUs only")


@dataclass
class EvaluateConfig:
    """mIoU on the clean test split (a predictions table), or of predicted mask files against a data set."""

    predictions: str = ""  # prediction table to score; default: the CRF output (or predict's if CRF is off)
    before_crf: str = ""  # a second prediction table scored alongside (the pipeline: predict's, when the CRF ran)
    out: str = ""  # metrics folder; default: <pipeline out>/eval
    grid_images: int = 6  # test images in the MLflow PNG grid
    pred: str = ""  # instead of predictions=: a folder of predicted mask PNGs (0 = background, 1..K = classes)
    gt: str = ""  # ground truth for pred=: a folder (images/ + masks/, or masks only) or a VOCdevkit / VOC2012 tree
    # the run's classes (ids 1..K); default: the predictions table's, or classes.json beside pred
    classes: list[str] = field(default_factory=list)
    split: str = "val"  # VOC only: the ImageSets/Segmentation/<split>.txt to score
    # Ground-truth classes the run does not have: 'background' (scored as 0: the run only knows its
    # classes and background, so calling a sofa 'cat' must count as an error) or 'ignore' (not scored).
    others: Literal["background", "ignore"] = "background"
    allow_missing: bool = False  # score only the gt masks that have a prediction (else a missing one is an error)

    def validate(self, p: str = "") -> None:
        check(not (self.predictions and self.pred), f"{p}predictions= and pred= are two ways to evaluate: give one")
        check(bool(self.pred) == bool(self.gt), f"{p}pred= and gt= go together")


@dataclass
class SegmentConfig:
    """A trained segmenter over a user's own photos -> palette masks, overlays, optional probabilities."""

    # a trained segmenter: a folder (a run's segmenter/: model.pt + meta.json) or an MLflow model URI,
    # models:/NAME@ALIAS, models:/NAME/VERSION or runs:/RUN_ID/segmenter
    model: str = ""
    images: str = ""  # one photo, or a folder searched recursively (jpg jpeg png gif bmp webp tif tiff)
    # where an MLflow model= URI is looked up: a tracking URI, or a run folder (its mlflow.db);
    # '' = MLFLOW_TRACKING_URI, else ./mlflow.db
    mlflow_uri: str = ""
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

    def validate(self, p: str = "") -> None:
        check(self.input_size == 0 or self.input_size >= 32, f"{p}input_size must be 0 (from the model) or >= 32")
        check(0 <= self.overlay_alpha <= 1, f"{p}overlay_alpha must be in [0, 1]")
        check(1 <= self.jpeg_quality <= 100, f"{p}jpeg_quality must be in 1..100")
        check(self.max_pixels >= 1, f"{p}max_pixels must be >= 1")
        check(len(self.classes) == len(set(self.classes)), f"{p}classes must not repeat a name")
