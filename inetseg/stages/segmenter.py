"""Segmenter stage: DeepLab-style net on the classifier's backbone, trained with Ray Train on pseudo labels
(train/segmenter.py)."""
from __future__ import annotations

from inetseg import config as C
from inetseg.stages.common import declared_fingerprint, run_stage
from inetseg.train import segmenter


def run(cfg: C.SegmenterConfig, resume: bool = True) -> dict:
    """Train on cfg.pseudo, write cfg.out/model.pt + meta.json; returns the stage marker."""
    segmenter.check(cfg)
    fp = declared_fingerprint("segmenter", cfg)
    return run_stage("segmenter", cfg.out, fp, resume, lambda: segmenter.fit(cfg, f"segmenter-{fp}"))
