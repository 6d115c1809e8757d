"""The MLflow tracker against a real SQLite store: parent, nested stage runs, failures, artifacts."""
import mlflow
import pytest

from inetseg.tracking import Tracker


def test_parent_and_nested_runs(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    t = Tracker(uri, "exp")
    pid = t.start_parent("run", {"a.b": 1, "long": "x" * 7000, **{f"p{i}": i for i in range(150)}})
    with t.stage("one", {"lr": 0.1}) as st:
        st.log_metrics({"loss": 1.5, "nan": float("nan")}, step=2)
        st.log_json("summary.json", {"ok": True})
    with pytest.raises(RuntimeError):
        with t.stage("two"):
            raise RuntimeError("boom")
    t.log_metrics({"miou": 0.4})
    t.log_artifact_bytes("grid.png", b"\x89PNG")
    t.end()
    c = mlflow.MlflowClient(uri)
    parent = c.get_run(pid)
    assert parent.info.status == "FINISHED" and parent.data.metrics["miou"] == 0.4
    assert parent.data.params["a.b"] == "1" and len(parent.data.params["long"]) == 6000
    assert len(parent.data.params) == 152
    kids = {r.info.run_name: r for r in c.search_runs([parent.info.experiment_id],
                                                       f"tags.mlflow.parentRunId = '{pid}'")}
    assert kids["one"].info.status == "FINISHED" and kids["two"].info.status == "FAILED"
    assert kids["one"].data.metrics["loss"] == 1.5 and "nan" not in kids["one"].data.metrics
    assert [a.path for a in c.list_artifacts(kids["one"].info.run_id)] == ["summary.json"]
    assert "grid.png" in [a.path for a in c.list_artifacts(pid)]
    assert (tmp_path / "mlartifacts").is_dir()


def test_disabled_tracker_is_a_no_op(tmp_path):
    t = Tracker("sqlite:///nowhere/never.db", "exp", enabled=False)
    assert t.start_parent("r", {"a": 1}) == ""
    with t.stage("s") as st:
        st.log_metrics({"x": 1})
    t.end()


def test_a_temporary_global_uri_leaves_no_env_var_behind(tmp_path, monkeypatch):
    """mlflow.set_tracking_uri writes MLFLOW_TRACKING_URI; left behind, every later run of the process (and of the
    test suite) would log to it instead of its own folder's store."""
    import os

    from inetseg import tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with tracking._global_uri(f"sqlite:///{tmp_path}/a.db"):
        assert os.environ["MLFLOW_TRACKING_URI"].endswith("a.db")
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert tracking.Tracker.default_uri(str(tmp_path)) == f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    with tracking._global_uri(f"sqlite:///{tmp_path}/a.db"):
        pass
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5999"
