"""The whole pipeline on a tiny synthetic corpus under Ray with 2 CPUs, tracked in a real MLflow store."""
import json

import mlflow
import numpy as np
import pytest
from conftest import TINY

from inetseg import pipeline, shards
from inetseg.schema import IMAGES, PSEUDO


@pytest.fixture(scope="module")
def run(ray_session, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = pipeline.load_config("demo", None, [f"out={out}", *TINY])
    summary = pipeline.run(cfg)
    return out, cfg, summary


def test_summary_has_the_promised_fields(run):
    out, cfg, summary = run
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    for key in ("miou", "per_class_iou", "baseline_miou", "pseudo_label_miou", "counts", "seconds",
                "mlflow_run_id"):
        assert key in summary, key
    assert 0 <= summary["miou"] <= 1 and 0 <= summary["baseline_miou"] <= 1
    assert set(summary["per_class_iou"]) == {"background", *summary["classes"]}
    assert summary["counts"]["ingested"] == 3 * 24
    assert 0 < summary["counts"]["filtered"] <= summary["counts"]["ingested"]
    assert summary["counts"]["test_images"] == 8
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
    assert parent.data.params["classifier.width"] == "0.25"
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
    again = pipeline.run(pipeline.load_config("demo", None, [f"out={out}", *TINY]))
    assert again["miou"] == pytest.approx(summary["miou"])
    assert model.stat().st_mtime_ns == before  # not retrained
    assert again["mlflow_run_id"] != summary["mlflow_run_id"]


def test_ablation_runs_every_row_on_a_finished_run(run, tmp_path):
    """jobs/ablation.py reuses the run's classifier, writes all five rows, Markdown, a picture, MLflow."""
    import importlib.util
    import os

    out, cfg, summary = run
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "jobs", "ablation.py")
    spec = importlib.util.spec_from_file_location("ablation", path)
    ablation = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ablation)
    model = out / "classifier" / "model.pt"
    before = model.stat().st_mtime_ns
    dest = tmp_path / "ablation.json"
    assert ablation.main(["--out", str(dest), "--run", str(out), *TINY]) == 0
    result = json.loads(dest.read_text())
    assert model.stat().st_mtime_ns == before  # the classifier was reused, not retrained
    for row in ("forward", "backward", "fused", "fused_smooth", "fused_smooth_trimap"):
        r = result[row]
        assert 0 <= r["miou"] <= 1 and 0 <= r["precision"] <= 1 and r["images"] > 0
        assert (r["ignored"] > 0) == (row == "fused_smooth_trimap")  # only the trimap ignores pixels
    # The pipeline's own setting is the last row: the same pseudo labels again (deterministic inference).
    assert result["fused_smooth_trimap"]["miou"] == pytest.approx(summary["pseudo_label_miou"], abs=0.01)
    assert (tmp_path / "ablation.md").read_text().count("\n| ") == 5  # a line per row after the header
    assert (tmp_path / "ablation.png").read_bytes()[:4] == b"\x89PNG"
    client = mlflow.MlflowClient(f"sqlite:///{out}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name(cfg.experiment).experiment_id],
                              "tags.`inetseg.kind` = 'ablation'")
    assert len(runs) == 1 and runs[0].data.metrics["fused_miou"] == pytest.approx(result["fused"]["miou"])
