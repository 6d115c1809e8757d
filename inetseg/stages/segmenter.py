"""Segmenter stage: DeepLab-style net on the classifier's backbone, trained with Ray Train on pseudo labels
(train/segmenter.py)."""
from __future__ import annotations

from inetseg import config as C
from inetseg.stages.common import run_stage, stage_fingerprint
from inetseg.train import segmenter


def run(cfg: C.SegmenterConfig, resume: bool = True) -> dict:
    """Train on cfg.pseudo, write cfg.out/model.pt + meta.json; returns the stage marker."""
    segmenter.check(cfg)
    fp = stage_fingerprint(cfg, cfg.pseudo, cfg.model)
    return run_stage("segmenter", cfg.out, fp, resume, lambda: segmenter.fit(cfg, f"segmenter-{fp}"))
