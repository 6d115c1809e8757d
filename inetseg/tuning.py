"""Tuning as pure functions: the search space checked against the pipeline's keys, which stages a trial must re-run
(a content key per stage), the label-free objective, and the best trial as a config file.

The label-free objective (`evidence_score`). The method already judges a mask without labels: Eqn 12 keeps a
held-out image when the classifier still names its tag from the segmented object alone, P(tag | I.M) > mu. A
threshold setting is good when the final segmenter's masks are such objects on images nothing trained on. Per
image, with M the segmenter's object region for the tag (Eqn 11; after the CRF when the run has one):

    score = P(tag | I.M) - P(tag | I.(1-M)) - w |M| / |I|

sufficiency (the object alone is named), necessity (the rest, without it, is not) and size (each claimed pixel
costs): M = the whole image gets P(tag | I) - P(tag | grey) - w, an empty M gets P(tag | grey) - P(tag | I), and the
best M is the smallest region that carries the classifier's evidence, the saliency objective of Dabkowski and Gal
(2017, "Real time image saliency for black box classifiers"), each term in [0, 1]. The size term is what keeps the
whole image from winning, and its weight w (AREA_WEIGHT, `tune.area_weight`) is measured, not assumed: with unit
weight the objective ranked real-dev's attention settings against their pseudo labels' mIoU at 0.68 and 0.15 on two
draws of 24 settings (the preset's and 23 drawn), and picked one 2.6-6.0 points below the preset (real photos'
attention masks are too small, so penalising size works against quality there). jobs/bench/objective_weight.py chose
w = 0.625 on the first draw (0.85) and reports on the second 0.59, with the preset picked
(results/objective-weight.json); on the synthetic corpus no weight ranks the demo tune's trials (-0.48..+0.12): its
classes are told by a small emblem alone, so a classifier's evidence is tightest on the emblem. It reads nothing but
the pipeline's own nets and unlabelled images; how far it tracks true quality is measured by jobs/bench/tune.py
(spearman over trials).
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from inetseg import config as C
from inetseg.config.tuning import AREA_WEIGHT  # the size term's default weight (re-exported: tuning.AREA_WEIGHT)

DISTRIBUTIONS = ("uniform", "loguniform", "randint", "choice")
INVALID = -2.0  # the objective of a trial whose values the pipeline refuses (below every valid score)


def field_type(cfg: Any, key: str) -> type:
    """The type of dotted pipeline key `key` ("attention.delta_object"); ConfigError for an unknown key."""
    obj, parts = cfg, key.split(".")
    for i, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(obj)} if dataclasses.is_dataclass(obj) else {}
        if part not in fields:
            raise C.ConfigError(f"tune.space: unknown pipeline key '{key}'")
        obj = getattr(obj, part)
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(obj) or not isinstance(obj, (int, float, str, bool)):
                raise C.ConfigError(f"tune.space: '{key}' is not a value a trial can set")
            return type(obj)
    raise C.ConfigError(f"tune.space: unknown pipeline key '{key}'")


def check_space(space: dict, cfg: Any) -> dict[str, tuple[str, list]]:
    """{key: (distribution, arguments)} for every entry of `space`, each key a settable pipeline value and each
    distribution one of DISTRIBUTIONS with valid bounds; ConfigError naming the first bad entry."""
    out = {}
    for key, spec in space.items():
        tp = field_type(cfg, key)
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
            raise C.ConfigError(f"tune.space.{key}: give one of {', '.join(DISTRIBUTIONS)}, e.g. "
                                f"{{uniform: [0.1, 0.9]}}; got {spec!r}")
        kind, args = next(iter(spec.items()))
        args = list(args) if isinstance(args, (list, tuple)) else [args]
        if kind == "choice":
            C.check(len(args) >= 1, f"tune.space.{key}: choice needs at least one value")
        else:
            C.check(len(args) == 2 and all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)
                    and args[0] < args[1], f"tune.space.{key}: {kind} needs [low, high] numbers with low < high")
            C.check(kind != "loguniform" or args[0] > 0, f"tune.space.{key}: loguniform needs low > 0")
            C.check(tp in (int, float), f"tune.space.{key}: {kind} on a {tp.__name__} key")
        out[key] = (kind, args)
    return out


def stage_index(key: str, order: Sequence[str]) -> int:
    """Position in the run's stage order of the stage a dotted key belongs to (run-level keys: 0, the start)."""
    head = key.split(".")[0]
    return order.index(head) if head in order else 0


def first_stage(keys: Sequence[str], order: Sequence[str]) -> str:
    """The earliest stage any tuned key changes: the stages before it are shared by every trial."""
    return order[min(stage_index(k, order) for k in keys)]


def stage_key(stage: str, params: dict, order: Sequence[str]) -> str:
    """A content key for `stage` in a trial: the hash of the trial's values of every key at or before the stage.
    Two trials that agree up to a stage share its folder (a trial changing only crf.* reuses the segmenter)."""
    upto = order.index(stage)
    mine = {k: v for k, v in sorted(params.items()) if stage_index(k, order) <= upto}
    return hashlib.sha256(json.dumps(mine, sort_keys=True, default=str).encode()).hexdigest()[:12]


def apply(cfg: Any, params: dict) -> Any:
    """A copy of `cfg` with each dotted key set (typed as the key's field), validated: ConfigError when the values
    break a rule across keys (e.g. delta_background > delta_object)."""
    out = copy.deepcopy(cfg)
    for key, value in params.items():
        parts = key.split(".")
        obj = out
        for part in parts[:-1]:
            obj = getattr(obj, part)
        tp = field_type(cfg, key)
        setattr(obj, parts[-1], round(value) if tp is int else tp(value))
    C.validate(out)
    return out


def evidence_score(p_in: np.ndarray, p_out: np.ndarray, area: np.ndarray, area_weight: float = AREA_WEIGHT) -> float:
    """The label-free objective over images (module docstring): mean of P(tag | I.M) - P(tag | I.(1-M)) - w |M|/|I|."""
    p_in, p_out, area = (np.asarray(a, dtype=np.float64) for a in (p_in, p_out, area))
    if p_in.size == 0:
        return INVALID
    return float(np.mean(p_in - p_out - area_weight * area))


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Rank correlation (average ranks for ties); nan when either side is constant or fewer than 3 pairs."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan

    def ranks(v: np.ndarray) -> np.ndarray:
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=np.float64)
        for value in np.unique(v):  # ties share their mean rank
            tie = v == value
            r[tie] = r[tie].mean()
        return r

    return float(np.corrcoef(ranks(x), ranks(y))[0, 1])


def best_config(base: dict, params: dict) -> dict:
    """The pipeline config a user runs with the best trial's values: `base` (the tuned run's config as a user
    wrote it: preset + file + overrides, paths unresolved) with each dotted key set."""
    out = copy.deepcopy(base)
    for key, value in params.items():
        node = out
        *path, last = key.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return out
