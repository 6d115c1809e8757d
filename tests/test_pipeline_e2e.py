"""The whole pipeline (the demo preset made smaller: conftest.LEARNING, the smallest measured to learn) under Ray
with 2 CPUs, tracked in a real MLflow store."""
import json

import mlflow
import numpy as np
import pytest
from conftest import LEARN_MARGIN, LEARNING, learning_run

from inetseg import pipeline, shards
from inetseg.schema import IMAGES, PSEUDO


@pytest.fixture(scope="module")
def run(ray_session, tmp_path_factory):
    return learning_run(tmp_path_factory)


def test_the_pipeline_learns(run):
    _, _, summary = run
    assert summary["miou"] >= summary["baseline_miou"] + LEARN_MARGIN, (summary["miou"], summary["baseline_miou"])


def test_summary_has_the_promised_fields(run):
    out, cfg, summary = run
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    for key in ("miou", "per_class_iou", "baseline_miou", "pseudo_label_miou", "counts", "seconds",
                "mlflow_run_id"):
        assert key in summary, key
    assert 0 <= summary["miou"] <= 1 and 0 <= summary["baseline_miou"] <= 1
    assert set(summary["per_class_iou"]) == {"background", *summary["classes"]}
    assert summary["counts"]["ingested"] == 5 * 300
    assert 0 < summary["counts"]["filtered"] <= summary["counts"]["ingested"]
    assert summary["counts"]["test_images"] == 150
    assert set(summary["seconds"]) >= {"synth", "ingest", "classifier", "filter", "attention",
                                       "segmenter", "predict", "crf", "evaluate"}
    assert (out / "grid.png").stat().st_size > 0


def test_tables_follow_their_schemas(run):
    out, cfg, _ = run
    images = shards.read_table(cfg.ingest.out)
    assert images.schema.equals(IMAGES)
    pseudo = shards.read_table(cfg.attention.out)
    assert pseudo.schema.equals(PSEUDO)
    from inetseg import masks

    m = masks.decode_mask(pseudo.column("mask")[0].as_py())
    label = pseudo.column("label")[0].as_py()
    assert set(np.unique(m)) <= {0, label, 255}


def test_mlflow_holds_parent_and_nested_stage_runs(run):
    out, cfg, summary = run
    client = mlflow.MlflowClient(f"sqlite:///{out}/mlflow.db")
    parent = client.get_run(summary["mlflow_run_id"])
    assert parent.info.status == "FINISHED"
    assert "miou" in parent.data.metrics
    assert parent.data.params["classifier.width"] == "0.5"
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    names = {c.info.run_name for c in children}
    assert names >= {"synth", "ingest", "classifier", "filter", "attention", "segmenter", "predict",
                     "crf", "evaluate"}
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "grid.png" in artifacts and "summary.json" in artifacts


def test_rerun_reuses_finished_stages(run):
    out, cfg, summary = run
    model = out / "classifier" / "model.pt"
    before = model.stat().st_mtime_ns
    again = pipeline.run(pipeline.load_config("demo", None, [f"out={out}", *LEARNING]))
    assert again["miou"] == pytest.approx(summary["miou"])
    assert model.stat().st_mtime_ns == before  # not retrained
    assert again["mlflow_run_id"] != summary["mlflow_run_id"]

