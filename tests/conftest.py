"""Shared fixtures: one Ray session per test module (2 CPUs, like CI), a tiny pipeline config."""
import os

import pytest

# Keep Ray quiet and local in tests; never reach for a cluster the developer may have running.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.pop("RAY_ADDRESS", None)

# Small enough to run the whole pipeline in about a minute on 2 CPUs.
TINY = [
    "synth.num_classes=3", "synth.images_per_class=24", "synth.test_images=8", "synth.image_size=64",
    "ingest.max_side=64", "ingest.rows_per_shard=50",
    "classifier.width=0.25", "classifier.input_size=64", "classifier.epochs=2", "classifier.batch_size=16",
    "classifier.holdout_fraction=0.1",
    "filter.train.width=0.25", "filter.train.input_size=64", "filter.train.epochs=1", "filter.train.batch_size=16",
    "filter.train.holdout_fraction=0.1", "filter.rounds=1",  # all three rounds: tests/test_filter_rounds.py
    "attention.input_size=64",
    "segmenter.input_size=64", "segmenter.epochs=1", "segmenter.batch_size=8",
    "predict.input_size=64", "evaluate.grid_images=3", "crf.iterations=3",
]


@pytest.fixture(scope="module")
def ray_session():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    yield ray
    ray.shutdown()
