"""MLflow tracking: one parent run per pipeline run, a nested run per stage (the only mlflow import)."""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("inetseg")

_MAX_PARAM = 6000  # MLflow's limit on a param value's length
_BATCH = 100       # params per log_batch call that MLflow accepts


class _Run:
    """Logging into one MLflow run by id (explicit client, no global active-run stack)."""

    def __init__(self, client: Any, run_id: str):
        self.client, self.run_id = client, run_id

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(str(k), str(v)[:_MAX_PARAM]) for k, v in params.items()]
        for i in range(0, len(items), _BATCH):
            self.client.log_batch(self.run_id, params=items[i:i + _BATCH])

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = []
        for k, v in metrics.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                if isinstance(v, float):
                    log.warning("mlflow: skipping non-finite metric %s=%s", k, v)
                continue
            items.append(Metric(str(k), float(v), now, step or 0))
        for i in range(0, len(items), _BATCH):
            self.client.log_batch(self.run_id, metrics=items[i:i + _BATCH])

    def log_artifact_bytes(self, name: str, data: bytes) -> None:
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, name)
            with open(path, "wb") as f:
                f.write(data)
            self.client.log_artifact(self.run_id, path)

    def log_text(self, name: str, text: str) -> None:
        self.log_artifact_bytes(name, text.encode("utf-8"))

    def log_json(self, name: str, obj: Any) -> None:
        self.log_text(name, json.dumps(obj, indent=2, sort_keys=True, default=str))


class _NoRun(_Run):
    """What a disabled tracker hands out: every call does nothing."""

    def __init__(self) -> None:
        super().__init__(None, "")

    def log_params(self, params: dict) -> None: ...
    def log_metrics(self, metrics: dict, step: int | None = None) -> None: ...
    def log_artifact_bytes(self, name: str, data: bytes) -> None: ...


class Tracker:
    """A pipeline run in MLflow: `start_parent`, then `with tracker.stage(name):` per stage, then `end`."""

    def __init__(self, tracking_uri: str, experiment: str, enabled: bool = True):
        self.enabled = enabled
        self.parent: _Run = _NoRun()
        if not enabled:
            return
        from mlflow import MlflowClient

        self.uri = tracking_uri
        self.client = MlflowClient(tracking_uri)
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            artifacts = None
            if tracking_uri.startswith("sqlite:///"):  # keep artifacts beside the local database
                artifacts = os.path.join(os.path.dirname(tracking_uri[len("sqlite:///"):]), "mlartifacts")
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=artifacts)
        else:
            self.experiment_id = exp.experiment_id

    @staticmethod
    def default_uri(out_dir_local: str) -> str:
        """MLFLOW_TRACKING_URI when set, else a SQLite file in the run's output folder."""
        return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{os.path.abspath(out_dir_local)}/mlflow.db"

    def start_parent(self, run_name: str, params: dict, tags: dict | None = None) -> str:
        """Open the parent run with the resolved config as params; returns its id."""
        if not self.enabled:
            return ""
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags or {})
        self.parent = _Run(self.client, run.info.run_id)
        self.parent.log_params(params)
        return run.info.run_id

    @contextlib.contextmanager
    def stage(self, name: str, params: dict | None = None) -> Iterator[_Run]:
        """A nested run under the parent; FAILED if the stage raises (the exception propagates)."""
        if not self.enabled:
            yield _NoRun()
            return
        run = self.client.create_run(self.experiment_id, run_name=name,
                                     tags={"mlflow.parentRunId": self.parent.run_id, "inetseg.stage": name})
        child = _Run(self.client, run.info.run_id)
        if params:
            child.log_params(params)
        t0 = time.time()
        try:
            yield child
        except BaseException:
            self.client.set_terminated(child.run_id, "FAILED")
            raise
        child.log_metrics({"stage_seconds": time.time() - t0})
        self.client.set_terminated(child.run_id, "FINISHED")

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        self.parent.log_metrics(metrics, step)

    def log_json(self, name: str, obj: Any) -> None:
        self.parent.log_json(name, obj)

    def log_text(self, name: str, text: str) -> None:
        self.parent.log_text(name, text)

    def log_artifact_bytes(self, name: str, data: bytes) -> None:
        self.parent.log_artifact_bytes(name, data)

    def end(self, status: str = "FINISHED") -> None:
        if self.enabled and self.parent.run_id:
            self.client.set_terminated(self.parent.run_id, status)
