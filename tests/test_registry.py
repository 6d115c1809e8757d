"""The stage registry: one declaration per stage is all a new stage needs (CLI, help, order, paths, config)."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import pytest

from inetseg import cli, pipeline, registry, storage
from inetseg import config as C
from inetseg.registry import In, Registry, Stage


@dataclass
class SmoothConfig:
    """A hypothetical stage between predict and crf (what CONTRIBUTING.md's example adds)."""

    predictions: str = ""  # input predictions; default: predict's
    out: str = ""  # default: <run out>/smooth
    radius: int = 2  # a setting of its own

    def validate(self, p: str = "") -> None:
        C.check(self.radius >= 0, f"{p}radius must be >= 0")


def run_smooth(cfg: SmoothConfig, resume: bool = True) -> dict:
    """The hypothetical stage's body: records what it was given."""
    storage.write_json(storage.join(cfg.out, "seen.json"), {"predictions": cfg.predictions, "radius": cfg.radius})
    return {"images": 0, "radius": cfg.radius, "resume": resume}


def _with_smooth() -> Registry:
    """The registry plus one entry after predict, with crf reading the new stage's output."""
    stages = []
    for s in registry.REGISTRY.stages:
        if s.name == "crf":
            s = dataclasses.replace(s, inputs={"predictions": In(("smooth", "predict"))})
        stages.append(s)
        if s.name == "predict":
            stages.append(Stage("smooth", SmoothConfig, "test_registry:run_smooth", help="smooth predictions",
                                required=(("predictions", "out"),), folder="smooth", ray=False,
                                inputs={"predictions": In(("predict",))}, enabled=registry.scored))
    return Registry(stages)


def test_a_new_stage_follows_from_its_entry(tmp_path, monkeypatch):
    reg = _with_smooth()
    monkeypatch.setattr(registry, "REGISTRY", reg)
    cfg = pipeline.load_config("demo", None, [f"out={tmp_path}", "smooth.radius=5"])
    assert cfg.smooth.radius == 5 and cfg.smooth.out == storage.join(str(tmp_path), "smooth")
    assert cfg.smooth.predictions == cfg.predict.out  # its input, from the stage that makes it
    assert cfg.crf.predictions == cfg.smooth.out  # the next stage reads it
    order = [s.name for s in registry.stages_of(cfg)]
    assert order.index("predict") < order.index("smooth") < order.index("crf")
    with pytest.raises(C.ConfigError, match="smooth.radius must be >= 0"):
        pipeline.load_config("demo", None, [f"out={tmp_path}", "smooth.radius=-1"])
    assert "smooth:" in C.dump_yaml(cfg)
    # The command line: a command with its keys in --help, run with the stage's own config.
    parser = cli.build_parser("smooth")
    help_text = parser._subparsers._group_actions[0].choices["smooth"].format_help()
    assert "radius" in help_text and "default: 2" in help_text
    pred = tmp_path / "pred"
    pred.mkdir()
    assert cli.main(["smooth", f"predictions={pred}", f"out={tmp_path / 'sm'}", "radius=3"]) == 0
    assert json.loads((tmp_path / "sm" / "seen.json").read_text()) == {"predictions": str(pred), "radius": 3}


def test_every_pipeline_input_comes_from_an_earlier_stage_or_the_run():
    seen: set[str] = set()
    for stage in registry.REGISTRY.pipeline:
        fields = {f.name for f in dataclasses.fields(stage.config)}
        assert "out" in fields, stage.name
        for key, ref in stage.inputs.items():
            assert key in fields, (stage.name, key)
            for product in ref.products:
                name, _, what = product.partition(".")
                assert name in seen, f"{stage.name}.{key} reads {product}, which runs later or not at all"
                assert not what or what in registry.get(name).products, product
        seen.add(stage.name)


def test_literal_choices_are_checked_by_the_loader():
    with pytest.raises(C.ConfigError, match="backend must be one of auto, gloo, nccl, got 'mpi'"):
        C.from_dict(C.ComputeConfig, {"backend": "mpi"})
    with pytest.raises(C.ConfigError, match="attention.maps must be one of forward, backward, fused"):
        pipeline.load_config("demo", None, ["attention.maps=both"])


def test_internal_keys_are_not_user_keys(tmp_path):
    with pytest.raises(C.ConfigError, match="unknown config key 'folds'"):
        C.from_dict(C.ClassifierConfig, {"folds": 3})
    cfg = pipeline.load_config("real", None, [f"out={tmp_path}", f"source={tmp_path}"])
    assert cfg.classifier.init_from  # set by the code (classifier_from_filter) ...
    text = C.dump_yaml(cfg)
    assert "init_from" not in text and "folds: 3" in text  # ... left out of the file; filter.folds is a user key
    assert C.fingerprint(cfg.classifier) != C.fingerprint(dataclasses.replace(cfg.classifier, init_from=""))
    assert "init_from" not in cli.describe_fields(C.ClassifierConfig)
    # A saved config.yaml loads back as a config file.
    (tmp_path / "config.yaml").write_text(text)
    again = pipeline.load_config("none", str(tmp_path / "config.yaml"), [])
    assert C.to_dict(again, internal_keys=False) == C.to_dict(cfg, internal_keys=False)


def test_unknown_stage_is_a_config_error():
    with pytest.raises(C.ConfigError, match="unknown stage 'smoth'"):
        registry.get("smoth")
