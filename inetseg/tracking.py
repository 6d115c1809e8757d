"""MLflow tracking: one parent run per pipeline run, a nested run per stage, the nets they export as MLflow
models, the registered segmenter and its `champion` alias (the only mlflow import)."""
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

from inetseg import storage

log = logging.getLogger("inetseg")

_MAX_PARAM, _BATCH = 6000, 100  # MLflow's limits: a param value's length, params per log_batch call
MODEL_FILES = "extra_files"  # where log_model puts a net's model.pt + meta.json inside its MLflow model
CHAMPION = "champion"  # the alias `inetseg segment model=models:/NAME@champion` reads


def resolve_uri(given: str = "", folder: str = ".") -> str:
    """The tracking URI a key names: a URI as is, a run folder or .db file as its SQLite store; '' =
    MLFLOW_TRACKING_URI, else the SQLite store in `folder` (as Tracker.default_uri)."""
    if given and "://" not in given and given != "databricks":
        path = os.path.abspath(given)
        return f"sqlite:///{path if path.endswith('.db') else os.path.join(path, 'mlflow.db')}"
    return given or Tracker.default_uri(folder)


def _existing(uri: str) -> str:
    """`uri`, unless it is a SQLite file that does not exist (MLflow would create an empty store)."""
    if uri.startswith("sqlite:///") and not os.path.exists(uri[len("sqlite:///"):]):
        raise FileNotFoundError(f"no MLflow store at {uri[len('sqlite:///'):]}: name a run folder or a tracking "
                                "server (mlflow_uri=..., or MLFLOW_TRACKING_URI)")
    return uri


@contextlib.contextmanager
def _global_uri(uri: str) -> Iterator[None]:
    """mlflow's global tracking URI set to `uri` for the block (log_model, the SQLite registry and downloads read
    it, whatever client is given); its per-file progress bars off unless asked for (a model has a few files)."""
    import mlflow

    # set_tracking_uri writes os.environ too: left set, later runs of this process would log to ./mlflow.db.
    before, env = mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)
        if env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env


@contextlib.contextmanager
def _not_found(what: str) -> Iterator[None]:
    """An MlflowException (no such model, version, alias or run; no server) as a one-line FileNotFoundError."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as e:
        raise FileNotFoundError(f"{what}: {(str(e.message).strip().splitlines() or [''])[0][:300]}") from None


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
        self.models: dict[str, tuple[str, str]] = {}  # model folder -> (logged model id, run id)
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

    def start_parent(self, run_name: str, params: dict, tags: dict | None = None, run_id: str = "") -> str:
        """Open the parent run with the resolved config as params, or carry on with run `run_id`; returns its id."""
        if not self.enabled:
            return ""
        if not run_id:
            run_id = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags or {}).info.run_id
            _Run(self.client, run_id).log_params(params)
        self.parent = _Run(self.client, run_id)
        return run_id

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

    def log_model(self, run: _Run, model_dir: str, name: str) -> str:
        """The net exported in `model_dir` (model.pt + meta.json) as MLflow PyTorch model `name` of `run`: the
        torch.export format (mlflow.pytorch.load_model needs neither inetseg nor pickle), a signature and input
        example at its input size, meta.json in the MLmodel metadata and model.pt + meta.json beside it (what
        `inetseg segment model=models:/...` loads). Returns its id; `run` gets the seconds: mlflow_model_seconds."""
        if not self.enabled:
            return ""
        import mlflow.pytorch
        import torch
        from mlflow.models import ModelSignature
        from mlflow.types import Schema, TensorSpec

        from inetseg.models import io

        t0 = time.time()
        with tempfile.TemporaryDirectory() as d, _global_uri(self.uri):
            files = io.copy_local(model_dir, d)
            net, meta = io.load_model(d, torch.device("cpu"))
            x = io.example_input(meta)
            signature = ModelSignature(*(Schema([TensorSpec(x.dtype, (-1, *shape))])  # float32, any batch size
                                         for shape in (x.shape[1:], io.output_shape(meta))))
            model_id = self.client.create_logged_model(self.experiment_id, name=name, source_run_id=run.run_id,
                                                       tags={"inetseg.kind": io.kind_of(meta)}).model_id
            mlflow.pytorch.log_model(
                net, name=name, run_id=run.run_id, model_id=model_id, input_example=x, extra_files=files,
                signature=signature, metadata={"inetseg": io.card(meta)}, serialization_format="pt2",
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
                validate_serving_input=False)  # the check loads and runs the export once more: seconds per net
        self.models[storage.absolute(model_dir)] = (model_id, run.run_id)
        run.log_metrics({"mlflow_model_seconds": time.time() - t0})
        return model_id

    def register(self, name: str, model_dir: str, miou: float | None) -> str:
        """A new version of registered model `name`: the net this run logged from `model_dir` (logged into the
        parent run now if no stage did), tagged with the run and its mIoU when scored; a model's first version
        becomes its champion. Returns models:/NAME/VERSION ('' when tracking is off)."""
        if not self.enabled:
            return ""
        from mlflow.exceptions import MlflowException

        if storage.absolute(model_dir) not in self.models:
            self.log_model(self.parent, model_dir, "segmenter")
        model_id, run_id = self.models[storage.absolute(model_dir)]
        tags = {"inetseg.pipeline_run": self.parent.run_id, **({} if miou is None else {"miou": f"{miou:.4f}"})}
        with _global_uri(self.uri):
            try:
                aliases = self.client.get_registered_model(name).aliases
            except MlflowException:
                aliases = self.client.create_registered_model(name, description=f"inetseg segmenters; `inetseg "
                                                              f"segment model=models:/{name}@{CHAMPION}`").aliases
            version = self.client.create_model_version(name, f"models:/{model_id}", run_id, tags, model_id=model_id)
            if CHAMPION not in aliases:
                self.client.set_registered_model_alias(name, CHAMPION, version.version)
        log.info("mlflow: registered models:/%s/%s", name, version.version)
        return f"models:/{name}/{version.version}"

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


def promote(tracking_uri: str, name: str, version: str, alias: str = CHAMPION) -> None:
    """Point `alias` of registered model `name` at `version`: `inetseg models promote`, and what a tuning run
    that found a better segmenter calls. A missing model or version: one-line FileNotFoundError."""
    from mlflow import MlflowClient

    client = MlflowClient(_existing(tracking_uri))
    with _not_found(f"models:/{name}/{version}"):
        client.get_model_version(name, str(version))
        client.set_registered_model_alias(name, alias, str(version))


def model_versions(tracking_uri: str, name: str) -> list[dict]:
    """Every version of registered model `name`, newest first: version, aliases, mIoU tag, run id, source."""
    from mlflow import MlflowClient

    client = MlflowClient(_existing(tracking_uri))
    with _not_found(f"models:/{name}"):
        aliases = client.get_registered_model(name).aliases
        found = client.search_model_versions(f"name = '{name}'")
    rows = [{"version": int(v.version), "aliases": sorted(a for a, n in aliases.items() if str(n) == str(v.version)),
             "miou": v.tags.get("miou", ""), "run_id": v.run_id, "source": v.source} for v in found]
    return sorted(rows, key=lambda v: -v["version"])


def pinned(uri: str, tracking_uri: str) -> str:
    """models:/NAME@ALIAS as the version it points at now, models:/NAME/VERSION (whose files never change)."""
    name, at, alias = uri[len("models:/"):].partition("@")
    if not (uri.startswith("models:/") and at):
        return uri
    from mlflow import MlflowClient

    with _not_found(f"model={uri} (MLflow at {tracking_uri})"):
        return f"models:/{name}/{MlflowClient(_existing(tracking_uri)).get_model_version_by_alias(name, alias).version}"


def download_model(uri: str, tracking_uri: str, dst: str) -> str:
    """The model.pt + meta.json of a model Tracker.log_model logged (models:/NAME@ALIAS, models:/NAME/VERSION,
    runs:/RUN_ID/NAME or models:/MODEL_ID) downloaded into the local folder `dst`; returns the folder holding
    them. A URI that names no such model: one-line FileNotFoundError."""
    import mlflow.artifacts

    with _global_uri(_existing(tracking_uri)), _not_found(f"model={uri} (MLflow at {tracking_uri})"):
        if uri.startswith("models:/m-") and "/" not in uri[len("models:/"):]:  # a logged model, by id
            uri = mlflow.MlflowClient(tracking_uri).get_logged_model(uri[len("models:/"):]).artifact_location
        return mlflow.artifacts.download_artifacts(artifact_uri=f"{uri.rstrip('/')}/{MODEL_FILES}", dst_path=dst,
                                                   tracking_uri=tracking_uri, registry_uri=tracking_uri)
