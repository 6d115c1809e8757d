"""Online fine-tuning under Ray on a tiny finished run: split, relabel (Eqn 11-12), keep, fine-tune, resume."""
from __future__ import annotations

import dataclasses

import pytest
from conftest import TINY

from inetseg import config as C
from inetseg import pipeline, shards
from inetseg.schema import IMAGES, PSEUDO, RELABELLED
from inetseg.stages import finetune, split


@pytest.fixture(scope="module")
def run(ray_session, tmp_path_factory):
    """A tiny pipeline with fine-tuning on: its split and finetune stages run in order like every other."""
    out = tmp_path_factory.mktemp("ft")
    cfg = pipeline.load_config("demo", None, [f"out={out}", *TINY, "crf.enabled=false", "finetune.enabled=true",
                                              "split.share=0.3", "finetune.mu=0.0"])
    return cfg, pipeline.run(cfg)


def test_the_pipeline_runs_split_and_finetune_and_predicts_with_the_finetuned_model(run):
    cfg, summary = run
    assert list(summary["seconds"]).index("split") < list(summary["seconds"]).index("classifier")
    assert list(summary["seconds"]).index("segmenter") < list(summary["seconds"]).index("finetune")
    assert cfg.predict.model == cfg.finetune.out + "/round1/segmenter"
    held, train = shards.read_table(cfg.split.out + "/heldout"), shards.read_table(cfg.split.out + "/train")
    assert held.schema.equals(IMAGES) and train.schema.equals(IMAGES)
    assert held.num_rows > 0 and not set(held.column("id").to_pylist()) & set(train.column("id").to_pylist())
    assert cfg.classifier.images == cfg.split.out + "/train"  # the first nets never see the held-out share
    assert summary["counts"]["held_out"] == held.num_rows


def test_relabelled_rows_and_the_kept_pseudo_labels(run):
    cfg, _ = run
    scored = shards.read_table(cfg.finetune.out + "/round1/scored")
    assert scored.schema.equals(RELABELLED)
    p = scored.column("p_tag").to_pylist()
    assert all(0 <= v <= 1 for v in p) and all(scored.column("kept").to_pylist())  # mu = 0 keeps all
    pseudo = shards.read_table(cfg.finetune.out + "/round1/pseudo")
    assert pseudo.schema.equals(PSEUDO) and pseudo.num_rows == scored.num_rows
    meta = shards.read_marker(cfg.finetune.out)
    rnd = meta["rounds"][0]
    # trained on the new labels and the initial ones (include_initial)
    assert rnd["trained_on"] == pseudo.num_rows + shards.count_rows(cfg.attention.out)


def test_each_rounds_pseudo_labels_are_scored_against_the_hidden_truth_in_its_mlflow_run(run):
    import mlflow

    cfg, summary = run
    q = summary["finetune_pseudo_miou"]["round1"]
    assert 0 <= q <= 1
    client = mlflow.MlflowClient(f"sqlite:///{cfg.out}/mlflow.db")
    child = client.search_runs([client.get_run(summary["mlflow_run_id"]).info.experiment_id],
                               f"tags.mlflow.parentRunId = '{summary['mlflow_run_id']}' and "
                               "attributes.run_name = 'finetune'")[0]
    assert child.data.metrics["round1_miou"] == pytest.approx(q)
    assert {"round1_precision", "round1_ignored", "kept_share", "mean_p_tag"} <= set(child.data.metrics)
    assert "round1" in pipeline.format_table(summary)


def test_a_strict_mu_that_keeps_nothing_is_a_one_line_error_and_a_rerun_reuses(run, tmp_path):
    cfg, _ = run
    again = finetune.run(cfg.finetune)
    assert again.get("reused") is True
    strict = dataclasses.replace(cfg.finetune, mu=0.999999, out=str(tmp_path / "strict"))
    with pytest.raises(C.ConfigError, match="kept none"):
        finetune.run(strict)
    assert split.run(cfg.split).get("reused") is True


def test_fine_tuning_continues_the_segmenters_recorded_schedule(run):
    """The fine-tuned net trains at the size, batch and lr the first one did (the demo's 64 px here, not the
    paper's 321 px default): the segmenter's meta.json records its schedule and finetune reads it."""
    from inetseg import storage
    from inetseg.train.segmenter import recorded_config

    cfg, _ = run
    first = storage.read_json(cfg.segmenter.out + "/meta.json")
    tuned = storage.read_json(cfg.finetune.out + "/round1/segmenter/meta.json")
    assert first["training"]["input_size"] == cfg.segmenter.input_size == 64
    assert tuned["training"] == first["training"] and tuned["input_size"] == 64
    assert recorded_config(first) == dataclasses.replace(cfg.segmenter, pseudo="", model="", out="")
    # A folder exported before schedules were recorded: the defaults at its own input size.
    assert recorded_config({"input_size": 96}) == C.SegmenterConfig(input_size=96)


def test_region_labels_ignore_nothing_and_fine_tune_too(run, tmp_path):
    cfg, _ = run
    region = dataclasses.replace(cfg.finetune, labels="region", out=str(tmp_path / "region"))
    meta = finetune.run(region)
    scored = shards.read_table(region.out + "/round1/scored", columns=["ignored", "foreground"])
    assert all(v == 0 for v in scored.column("ignored").to_pylist())
    assert meta["rounds"][0]["trained_on"] > 0 and meta["model"].endswith("round1/segmenter")


def test_a_new_fine_tuning_lr_retrains_without_relabelling(run):
    """The relabel step's fingerprint holds only what changes a label: lr and epochs re-train, not relabel."""
    import os

    cfg, _ = run
    scored = cfg.finetune.out + "/round1/scored"
    before = {f: os.stat(os.path.join(scored, f)).st_mtime_ns for f in os.listdir(scored)}
    meta = finetune.run(dataclasses.replace(cfg.finetune, lr=0.02))
    assert not meta.get("reused")
    assert {f: os.stat(os.path.join(scored, f)).st_mtime_ns for f in os.listdir(scored)} == before
