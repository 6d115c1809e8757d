"""Typed configuration: one dataclass per stage, YAML files plus key=value overrides (see core.py).

The run's config (a section per pipeline stage) is assembled from the stage registry: registry.PipelineConfig."""
from __future__ import annotations

from inetseg.config.core import (
    ConfigError,
    check,
    deep_merge,
    dump_yaml,
    fingerprint,
    flatten,
    from_dict,
    internal,
    load,
    parse_overrides,
    read_yaml,
    subset,
    to_dict,
    validate,
)
from inetseg.config.data import CrawlConfig, IngestConfig, SynthConfig, TestSetConfig
from inetseg.config.inference import CRFConfig, CRFParams, EvaluateConfig, PredictConfig, SegmentConfig
from inetseg.config.run import REGISTERED_MODEL, RUN_FIELDS, check_run
from inetseg.config.training import (
    AttentionConfig,
    ClassifierConfig,
    ComputeConfig,
    FilterConfig,
    FinetuneConfig,
    SegmenterConfig,
    SplitConfig,
)

__all__ = [
    "REGISTERED_MODEL", "RUN_FIELDS", "check_run",
    "AttentionConfig", "CRFConfig", "CRFParams", "ClassifierConfig", "ComputeConfig", "ConfigError", "CrawlConfig",
    "EvaluateConfig", "FilterConfig", "FinetuneConfig", "IngestConfig", "PredictConfig", "SegmentConfig",
    "SegmenterConfig", "SplitConfig", "SynthConfig", "TestSetConfig", "check", "deep_merge", "dump_yaml",
    "fingerprint", "flatten", "from_dict", "internal", "load", "parse_overrides", "read_yaml", "subset", "to_dict",
    "validate",
]
