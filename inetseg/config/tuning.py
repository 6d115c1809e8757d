"""`inetseg tune`'s own settings (the pipeline it tunes has its usual config): what to search, how, scored how."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from inetseg.config.core import check

# The thresholds the method sets by hand, with ranges around the paper's meaning. Each entry: a dotted pipeline
# key -> {uniform|loguniform: [low, high]} | {randint: [low, high]} (high inclusive) | {choice: [a, b, ...]}.
# Keys of a stage the tuned run does not have (finetune.mu with fine-tuning off, crf.* with the CRF off) are
# left out of the search with a warning.
DEFAULT_SPACE: dict[str, dict[str, list]] = {
    "attention.delta_object": {"uniform": [0.5, 0.9]},  # Eqn 10: above -> the tag
    "attention.delta_background": {"uniform": [0.1, 0.5]},  # Eqn 10: at or below -> background (ranges disjoint)
    "attention.lambda1": {"uniform": [0.0, 2.0]},  # Eqn 8: forward CAM's weight
    "attention.lambda2": {"uniform": [0.0, 2.0]},  # Eqn 8: excitation product's weight
    "attention.segment_scale": {"loguniform": [25.0, 400.0]},  # Eqn 9's segments
    "finetune.mu": {"uniform": [0.2, 0.7]},  # Eqn 12
    "crf.bilateral_sxy": {"loguniform": [5.0, 80.0]},
    "crf.bilateral_srgb": {"loguniform": [2.0, 15.0]},
}


# label_free: the weight of the mask-size term (tuning.evidence_score; measured by jobs/bench/objective_weight.py,
# chosen on one draw of real-dev settings: Dabkowski and Gal's unit weight ranked real photos' settings worse).
AREA_WEIGHT = 0.625


def _default_space() -> dict[str, Any]:
    return {k: dict(v) for k, v in DEFAULT_SPACE.items()}


@dataclass
class TuneConfig:
    """A Ray Tune search over pipeline keys: trials share every stage before the first key they change, and are
    scored without labels on validation images nothing trained on (or on a labelled validation folder)."""

    out: str = ""  # the search's folder (trials' stages, Ray Tune's state, best.yaml); default: <pipeline out>/tune
    space: dict[str, Any] = field(default_factory=_default_space)  # dotted key -> distribution (DEFAULT_SPACE)
    num_samples: int = 12  # trials
    max_concurrent: int = 1  # trials at once (each runs Ray Data / Ray Train work of its own)
    # optuna: TPE (Optuna's sampler), which models each key's good and bad values apart, suits a dozen trials of
    # mixed continuous keys; random: Ray Tune's basic variant generator (a baseline for the searcher).
    search: Literal["optuna", "random"] = "optuna"
    # asha: a trial reports after attention (its pseudo labels' evidence), after its first segmenter and when
    # finished (fine-tuning, CRF); at each report ASHA stops it unless it is in the top 1/reduction_factor of the
    # trials scored there so far, so a poor threshold setting pays for attention (a minute in the demo), not for
    # a segmenter and fine-tuning. fifo: no stopping.
    scheduler: Literal["asha", "fifo"] = "asha"
    reduction_factor: int = 3  # ASHA: 1 in reduction_factor trials goes on at each rung
    # label_free: tuning.evidence_score on val images (see inetseg/tuning.py); val_miou: mIoU on the labelled
    # folder `val` (never the test split).
    objective: Literal["label_free", "val_miou"] = "label_free"
    val: str = ""  # objective=val_miou: a labelled folder (images/, masks/, classes.json), not the test folder
    val_share: float = 0.1  # label_free: share of the filtered images kept out of every training (split.val_share)
    val_images: int = 300  # label_free: at most this many of them scored per trial (a hash-chosen, fixed subset)
    area_weight: float = AREA_WEIGHT  # label_free: the mask-size term's weight (AREA_WEIGHT above)
    seed: int = 0  # the searcher's seed
    promote: bool = True  # register the best trial's segmenter and point the registered model's @champion at it
    resume: bool = True  # continue a killed search in `out` (Tuner.restore); false: start over

    def validate(self, p: str = "") -> None:
        check(self.num_samples >= 1 and self.max_concurrent >= 1, f"{p}num_samples and max_concurrent must be >= 1")
        check(self.reduction_factor >= 2, f"{p}reduction_factor must be >= 2")
        check(0 < self.val_share < 0.5, f"{p}val_share must be in (0, 0.5)")
        check(self.val_images >= 1, f"{p}val_images must be >= 1")
        check(0 <= self.area_weight <= 2, f"{p}area_weight must be in [0, 2] (0: no size term; the whole image wins)")
        check(self.objective != "val_miou" or bool(self.val), f"{p}objective=val_miou needs val=DIR (a labelled "
              "folder: images/, masks/, classes.json), never the test split")
        check(bool(self.space), f"{p}space is empty: name at least one key to tune")
