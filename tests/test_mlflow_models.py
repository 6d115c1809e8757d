"""The nets as MLflow models: a tiny pipeline run logs its classifier and segmenter, registers the segmenter
(a version per run, tagged with the mIoU, the first one @champion), `inetseg models` moves the alias, and
`inetseg segment model=models:/...` loads through MLflow: from the local SQLite store and from a real
`mlflow server` on loopback."""
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from conftest import TINY, free_port, kill_tree, tiny_run
from PIL import Image

from inetseg import config as C
from inetseg import pipeline, registry, tracking

NAME = "inetseg-segmenter"


@pytest.fixture(scope="module")
def run(ray_session, tmp_path_factory):
    return tiny_run(tmp_path_factory)


@pytest.fixture(scope="module")
def client(run):
    """A client of the run's store, which is also mlflow's global store meanwhile (get_model_info, load_model)."""
    uri, before, env = f"sqlite:///{run[0]}/mlflow.db", mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    yield mlflow.MlflowClient(uri)
    mlflow.set_tracking_uri(before)  # which also sets the env var: put it back as it was for the next modules
    if env is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)


def stage_runs(client, summary) -> dict:
    parent = client.get_run(summary["mlflow_run_id"])
    kids = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    return {r.info.run_name: r for r in kids}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("photos")
    for i, (h, w) in enumerate([(40, 60), (72, 50), (64, 64)]):
        rgb = np.random.default_rng(i).integers(0, 255, (h, w, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(root / f"p{i}.jpg")
    return str(root)


def cli(*args):
    return subprocess.run([sys.executable, "-m", "inetseg.cli", *args], capture_output=True, text=True, timeout=300)


def one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def segment_with(model: str, mlflow_uri: str, images: str, out: Path) -> dict:
    from inetseg.stages import segment

    return segment.run(C.SegmentConfig(model=model, mlflow_uri=mlflow_uri, images=images, out=str(out)))


def test_stages_log_their_nets_as_mlflow_models(run, client):
    out, cfg, summary = run
    kids = stage_runs(client, summary)
    seconds = {}
    for stage, kind in (("classifier", "classifier"), ("segmenter", "segmenter")):
        model_uri = f"runs:/{kids[stage].info.run_id}/{kind}"
        info = mlflow.models.get_model_info(model_uri)
        meta = info.metadata["inetseg"]
        on_disk = json.loads((out / stage / "meta.json").read_text())
        assert meta["kind"] == kind and meta["classes"] == summary["classes"] and meta["input_size"] == 64
        assert meta["num_classes"] == on_disk["num_classes"] and "history" not in meta
        side = on_disk["input_size"]
        spec = info.signature.inputs.to_dict()[0]["tensor-spec"]
        assert spec["dtype"] == "float32" and list(spec["shape"]) == [-1, 3, side, side]
        assert info.saved_input_example_info["type"] == "ndarray"
        seconds[stage] = kids[stage].data.metrics["mlflow_model_seconds"]
    # The seconds logging a model adds to a run (the tiny run's nets are small, its 64 px example too).
    print(f"\nmlflow model logging seconds: {seconds}; run total {summary['total_seconds']} s", file=sys.stderr)
    assert sum(seconds.values()) < 60


def test_the_final_segmenter_is_registered_with_the_runs_miou(run, client):
    out, cfg, summary = run
    assert summary["registered_model"] == f"models:/{NAME}/1"
    assert json.loads((out / "summary.json").read_text())["registered_model"] == summary["registered_model"]
    version = client.get_model_version(NAME, "1")
    assert float(version.tags["miou"]) == pytest.approx(summary["miou"], abs=1e-4)
    assert version.tags["inetseg.pipeline_run"] == summary["mlflow_run_id"]
    assert version.run_id == stage_runs(client, summary)["segmenter"].info.run_id  # predict's model
    assert client.get_registered_model(NAME).aliases == {"champion": 1}
    # The pt2 export loads without inetseg's classes, for any batch size.
    net = mlflow.pytorch.load_model(f"models:/{NAME}@champion")
    assert tuple(net(torch.zeros(3, 3, 64, 64)).shape) == (3, len(summary["classes"]) + 1, 64, 64)


def test_the_registered_model_is_the_fine_tuned_one_when_fine_tuning_runs(tmp_path):
    cfg = pipeline.load_config("demo", None, [f"out={tmp_path}", "finetune.enabled=true", "finetune.rounds=2"])
    finetune = registry.get("finetune")
    assert finetune.model_kind == "segmenter"
    assert cfg.predict.model == finetune.model_dir(cfg.finetune) == str(tmp_path / "finetune" / "round2" / "segmenter")
    assert registry.get("segmenter").model_dir(cfg.segmenter) == cfg.segmenter.out
    assert not registry.get("predict").model_kind


def test_segment_loads_the_champion_through_mlflow(run, photos, tmp_path):
    out, cfg, summary = run
    by_uri = segment_with(f"models:/{NAME}@champion", str(out), photos, tmp_path / "a")
    by_dir = segment_with(str(out / "segmenter"), "", photos, tmp_path / "b")
    assert by_uri["segmented"] == by_dir["segmented"] == 3
    for i in range(3):  # the same weights: the same masks
        mask = Path("masks") / f"p{i}.png"
        assert (tmp_path / "a" / mask).read_bytes() == (tmp_path / "b" / mask).read_bytes()
    assert json.loads((tmp_path / "a" / "classes.json").read_text()) == summary["classes"]
    assert json.loads((tmp_path / "a" / "_segment.json").read_text())["model"] == f"models:/{NAME}/1"  # pinned


def test_a_second_run_is_a_new_version_and_promote_moves_the_champion(run, client, photos, tmp_path):
    out, cfg, summary = run
    again = pipeline.run(pipeline.load_config("demo", None, [f"out={out}", *TINY]))  # every stage reused
    assert again["registered_model"] == f"models:/{NAME}/2"
    assert client.get_registered_model(NAME).aliases == {"champion": 1}  # moved only by hand (or by tuning)
    listed = cli("models", "list", "--mlflow-uri", str(out))
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()[1:]]
    assert [r[0] for r in rows] == ["2", "1"] and rows[1][2] == "champion"
    promoted = cli("models", "promote", "2", "--mlflow-uri", str(out))
    assert promoted.returncode == 0, promoted.stderr
    assert client.get_registered_model(NAME).aliases == {"champion": 2}
    assert segment_with(f"models:/{NAME}@champion", str(out), photos, tmp_path / "c")["segmented"] == 3
    assert json.loads((tmp_path / "c" / "_segment.json").read_text())["model"] == f"models:/{NAME}/2"
    tracking.promote(f"sqlite:///{out}/mlflow.db", NAME, "1")  # what a tuning run calls
    assert client.get_registered_model(NAME).aliases == {"champion": 1}
    segmenter_run = stage_runs(client, again)["segmenter"].info.run_id
    for i, uri in enumerate((f"models:/{NAME}/2", f"runs:/{segmenter_run}/segmenter")):
        assert segment_with(uri, f"sqlite:///{out}/mlflow.db", photos, tmp_path / str(i))["segmented"] == 3


def test_a_bad_model_uri_or_store_is_a_one_line_error(run, photos, tmp_path):
    out, _, _ = run
    base = [f"images={photos}", f"out={tmp_path}/o"]
    one_line_error(cli("segment", f"model=models:/{NAME}@nope", f"mlflow_uri={out}", *base), f"models:/{NAME}@nope")
    one_line_error(cli("segment", "model=models:/no-such/1", f"mlflow_uri={out}", *base), "models:/no-such/1")
    one_line_error(cli("segment", f"model=models:/{NAME}/1", f"mlflow_uri={tmp_path}/none", *base), "no MLflow store")
    one_line_error(cli("models", "promote", "99", "--mlflow-uri", str(out)), f"models:/{NAME}/99")
    one_line_error(cli("models", "promote", "--mlflow-uri", str(out)), "VERSION")


# ------------------------------------------------------------------ a real tracking server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`mlflow server` on a free loopback port: SQLite backend, proxied artifacts in a temp folder."""
    root = tmp_path_factory.mktemp("server")
    port = free_port()
    exe = Path(sys.executable).parent / "mlflow"
    with open(root / "server.log", "wb") as logf:
        proc = subprocess.Popen([str(exe), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                                 "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
                                 "--artifacts-destination", str(root / "artifacts")], stdout=logf, stderr=logf)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None and time.time() < deadline, (root / "server.log").read_text()[-3000:]
            time.sleep(1)
        yield uri, root
    finally:
        kill_tree(proc)


def test_register_and_load_through_a_tracking_server(run, server, photos, tmp_path):
    out, cfg, summary = run
    uri, root = server
    t = tracking.Tracker(uri, "server-exp")
    t.start_parent("p", {})
    with t.stage("segmenter") as st:
        t.log_model(st, cfg.segmenter.out, "segmenter")
    assert t.register(NAME, cfg.segmenter.out, 0.25) == f"models:/{NAME}/1"
    assert t.register(NAME, cfg.segmenter.out, None) == f"models:/{NAME}/2"
    t.end()
    tracking.promote(uri, NAME, "2")
    versions = tracking.model_versions(uri, NAME)
    assert [(v["version"], v["aliases"], v["miou"]) for v in versions] == [(2, ["champion"], ""), (1, [], "0.2500")]
    assert list((root / "artifacts").rglob("model.pt"))  # the files went through the server's artifact proxy
    by_server = segment_with(f"models:/{NAME}@champion", uri, photos, tmp_path / "s")
    by_dir = segment_with(cfg.segmenter.out, "", photos, tmp_path / "d")
    assert by_server["segmented"] == by_dir["segmented"] == 3
    assert (tmp_path / "s" / "masks" / "p0.png").read_bytes() == (tmp_path / "d" / "masks" / "p0.png").read_bytes()
    one_line_error(cli("segment", f"model=models:/{NAME}/7", f"mlflow_uri={uri}", f"images={photos}",
                       f"out={tmp_path}/o"), f"models:/{NAME}/7")
