"""The paper's noise-filtering rules (Eqn 13-15) as pure functions over classifier scores."""
from __future__ import annotations

from typing import Any

import numpy as np

from inetseg import storage


def tag_scores(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(P(tag), rank of the tag) per row; probs N x K softmax, labels N in 1..K; rank 1 = top class."""
    idx = labels.astype(np.int64) - 1
    p_tag = probs[np.arange(len(idx)), idx]
    # Ties count in the tag's favour, so a uniform prediction ranks the tag first, as argsort would.
    rank = 1 + (probs > p_tag[:, None]).sum(axis=1)
    return p_tag.astype(np.float32), rank.astype(np.int16)


def top_classes(probs: np.ndarray, k: int = 5) -> np.ndarray:
    """N x min(k, K) class labels (1..K), most probable first."""
    k = min(k, probs.shape[1])
    return (np.argsort(-probs, axis=1, kind="stable")[:, :k] + 1).astype(np.int16)


def keep_mask(p_tag: np.ndarray, tag_rank: np.ndarray, rule: str, threshold: float, top_k: int) -> np.ndarray:
    """Which images survive a round.

    eqn13 / eqn15: drop P(tag) <= threshold (the paper uses 0.1, then 0.6).
    eqn14: drop images whose tag is not among the top_k classes (the paper uses 3).
    none: keep everything (filtering off).
    """
    if rule in ("eqn13", "eqn15"):
        return p_tag > threshold
    if rule == "eqn14":
        return tag_rank <= top_k
    if rule == "none":
        return np.ones(len(p_tag), dtype=bool)
    raise ValueError(f"unknown filter rule {rule!r}")


def paper_rounds(rounds: int, eqn13_threshold: float = 0.1, eqn14_top_k: int = 3,
                 eqn15_threshold: float = 0.6) -> list[dict]:
    """The first `rounds` of the paper's schedule as keep_mask kwargs: Eqn 13, then 14, then 15."""
    schedule = [{"rule": "eqn13", "threshold": eqn13_threshold, "top_k": eqn14_top_k},
                {"rule": "eqn14", "threshold": 0.0, "top_k": eqn14_top_k},
                {"rule": "eqn15", "threshold": eqn15_threshold, "top_k": eqn14_top_k}]
    return schedule[:rounds]


def fold_of(ids, folds: int) -> np.ndarray:
    """Fold index 0..folds-1 per id, from a salted hash: stable across runs, independent of the
    holdout split and of the shard an image sits in."""
    import hashlib

    return np.array([int.from_bytes(hashlib.blake2b(f"fold:{i}".encode(), digest_size=8).digest(), "little") % folds
                     for i in ids], dtype=np.int64)


def split_tables(out: str) -> dict[str, str]:
    """The split stage's IMAGES tables under its out: what trains the first nets, what fine-tuning labels, and what
    nothing trains on (val/, written when split.val_share > 0: what `inetseg tune` scores trials on)."""
    return {name: storage.join(out, name) for name in ("train", "heldout", "val")}


def filtered_images(cfg: Any) -> str:
    """Where a filter config's surviving images end up: the last round's images/, or its input when rounds = 0."""
    return storage.join(cfg.out, f"round{cfg.rounds}", "images") if cfg.rounds else cfg.images
