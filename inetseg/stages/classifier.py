"""Classifier stage: GoogLeNet (weights=None) trained with Ray Train on the image shards (train/classifier.py)."""
from __future__ import annotations

from inetseg import config as C
from inetseg.stages.common import declared_fingerprint, run_stage
from inetseg.train import classifier


def run(cfg: C.ClassifierConfig, resume: bool = True) -> dict:
    """Train on cfg.images, write cfg.out/model.pt + meta.json; returns the stage marker."""
    classifier.check(cfg)
    fp = declared_fingerprint("classifier", cfg)
    return run_stage("classifier", cfg.out, fp, resume, lambda: classifier.fit(cfg, f"classifier-{fp}"))
