"""Typed configuration: one dataclass per stage, YAML files plus key=value overrides (see core.py)."""
from __future__ import annotations

from typing import Any

from inetseg.config.core import (ConfigError, check, deep_merge, dump_yaml, fingerprint, flatten, from_dict,
                                 internal, load, parse_overrides, read_yaml, subset, to_dict, validate)
from inetseg.config.data import CrawlConfig, IngestConfig, SynthConfig, TestSetConfig
from inetseg.config.inference import CRFConfig, CRFParams, EvaluateConfig, PredictConfig, SegmentConfig
from inetseg.config.training import (AttentionConfig, ClassifierConfig, ComputeConfig, FilterConfig,
                                     SegmenterConfig)

__all__ = [
    "AttentionConfig", "CRFConfig", "CRFParams", "ClassifierConfig", "ComputeConfig", "ConfigError", "CrawlConfig",
    "EvaluateConfig", "FilterConfig", "IngestConfig", "PipelineConfig", "PredictConfig", "SegmentConfig",
    "SegmenterConfig", "SynthConfig", "TestSetConfig", "check", "deep_merge", "dump_yaml", "fingerprint", "flatten",
    "from_dict", "internal", "load", "parse_overrides", "read_yaml", "subset", "to_dict", "validate",
]


def __getattr__(name: str) -> Any:
    """PipelineConfig is assembled from the stage registry, which imports this package: resolved on first use."""
    if name == "PipelineConfig":
        from inetseg.registry import PipelineConfig

        return PipelineConfig
    raise AttributeError(f"module 'inetseg.config' has no attribute {name!r}")
