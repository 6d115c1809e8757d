"""The cluster/ deployment files, checked offline.

- cluster/aws.yaml and cluster/gcp.yaml against the JSON schema in the installed ray wheel
  (the same check `ray up` runs first), then through Ray's own default-filling and validation;
- cluster/kuberay-rayjob.yaml: a ray.io/v1 RayJob running jobs/full_pipeline.py on GPU workers;
- cluster/runtime_env.yaml: accepted by ray.runtime_env.RuntimeEnv, working_dir '.';
- every pip list names every dependency in pyproject.toml, and the entrypoint parses with the
  job's own CLI.
"""
from __future__ import annotations

import copy
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import ray
import ray.autoscaler
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
LAUNCHER_CONFIGS = ["aws.yaml", "gcp.yaml"]
IMAGE = f"rayproject/ray:{ray.__version__}-py311-gpu"


def load(name: str) -> dict:
    with open(CLUSTER / name) as f:
        return yaml.safe_load(f)


def ray_schema() -> dict:
    with open(os.path.join(os.path.dirname(ray.autoscaler.__file__), "ray-schema.json")) as f:
        return json.load(f)


def project_deps() -> set[str]:
    """Canonical names of pyproject.toml's [project].dependencies."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    with open(REPO / "pyproject.toml", "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    return {canonicalize_name(Requirement(d).name) for d in deps}


def names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def pip_install_args(commands: list[str]) -> list[str]:
    """The requirement strings of every `pip install ...` in a list of shell commands."""
    reqs: list[str] = []
    for cmd in commands:
        words = shlex.split(cmd)
        if "pip" in words and "install" in words:
            reqs += [w for w in words[words.index("install") + 1:] if not w.startswith("-")]
    return reqs


# ---------------------------------------------------------------- ray up configs (AWS, GCP)

@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_config_matches_ray_schema(name):
    jsonschema.validate(load(name), ray_schema())


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_schema_check_is_live(name):
    """The schema rejects a misspelt node-type field, so the test above can fail."""
    cfg = load(name)
    node_type = next(iter(cfg["available_node_types"].values()))
    node_type["max_worker"] = 3
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(cfg, ray_schema())


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_config_passes_ray_up_preparation(name):
    """Ray's own defaults merge and validation (what `ray up` does before calling the cloud)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = load(name)
    validate_config(cfg)
    prepared = prepare_config(copy.deepcopy(cfg))
    validate_config(prepared)
    assert prepared["head_node_type"] in prepared["available_node_types"]


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_cluster_shape(name):
    cfg = load(name)
    assert cfg["docker"]["image"] == IMAGE
    assert cfg["idle_timeout_minutes"] > 0
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert not head["resources"].get("GPU"), "the head is CPU-only"
    workers = {k: v for k, v in types.items() if k != cfg["head_node_type"]}
    for t in workers.values():
        assert t["min_workers"] == 0, "workers scale from zero"
    gpu_like = [t for k, t in workers.items() if "gpu" in k]
    cpu_like = [t for k, t in workers.items() if "cpu" in k]
    assert any(t["max_workers"] == 8 for t in gpu_like)
    assert any(t["max_workers"] == 16 for t in cpu_like)
    assert cfg["max_workers"] >= sum(t["max_workers"] for t in workers.values())
    assert sum(t["max_workers"] for t in workers.values()) > 0


def test_gcp_gpu_workers_attach_accelerators():
    cfg = load("gcp.yaml")
    t4 = cfg["available_node_types"]["ray_worker_gpu_t4"]
    assert t4["resources"]["GPU"] == 1
    accel = t4["node_config"]["guestAccelerators"]
    assert accel[0]["acceleratorType"].endswith("nvidia-tesla-t4") and accel[0]["acceleratorCount"] == 1
    assert t4["node_config"]["scheduling"][0]["onHostMaintenance"] == "TERMINATE"
    # A top-level acceleratorType makes Ray's GCP provider treat the node as a TPU.
    for t in cfg["available_node_types"].values():
        assert "acceleratorType" not in t["node_config"]


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_config_keeps_token_auth_on(name):
    cfg = load(name)
    assert any("RAY_AUTH_MODE=token" in opt for opt in cfg["docker"]["run_options"])
    assert cfg["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_setup_installs_every_dependency(name):
    reqs = pip_install_args(load(name)["setup_commands"])
    missing = project_deps() - names(reqs)
    assert not missing, f"{name} setup_commands do not install {sorted(missing)} (see pyproject.toml)"
    ray_pins = [Requirement(r) for r in reqs if canonicalize_name(Requirement(r).name) == "ray"]
    assert ray_pins and all(str(p.specifier) == f"=={ray.__version__}" for p in ray_pins)


# ---------------------------------------------------------------- runtime env

def test_runtime_env_file():
    from ray.runtime_env import RuntimeEnv

    env = load("runtime_env.yaml")
    assert env["working_dir"] == "."
    RuntimeEnv(**env)  # Ray's own field validation (pip dict keys, env_vars types, ...)
    for pattern in ("runs/", ".git", ".venv"):
        assert pattern in env["excludes"]
    assert env["env_vars"]["MLFLOW_TRACKING_URI"].startswith("http")
    pkgs = env["pip"]["packages"]
    assert "ray" not in names(pkgs), "a runtime env must not reinstall ray"
    missing = project_deps() - {"ray"} - names(pkgs)
    assert not missing, f"runtime_env.yaml pip lacks {sorted(missing)} (see pyproject.toml)"


# ---------------------------------------------------------------- KubeRay RayJob

def test_kuberay_rayjob():
    from ray.runtime_env import RuntimeEnv

    job = load("kuberay-rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1"
    assert job["kind"] == "RayJob"
    spec = job["spec"]
    argv = shlex.split(spec["entrypoint"])
    assert argv[:2] == ["python", "jobs/full_pipeline.py"]
    assert (REPO / argv[argv.index("--config") + 1]).is_file()
    assert spec["shutdownAfterJobFinishes"] is True

    env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert env["working_dir"]
    assert env["env_vars"]["MLFLOW_TRACKING_URI"].startswith("http")
    RuntimeEnv(**env)
    assert not (project_deps() - {"ray"} - names(env["pip"]["packages"]))

    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == ray.__version__
    assert cluster["enableInTreeAutoscaling"] is True
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["image"] == IMAGE
    assert "nvidia.com/gpu" not in head["resources"].get("limits", {})
    gpu_groups = []
    for group in cluster["workerGroupSpecs"]:
        assert 0 <= group["minReplicas"] <= group["maxReplicas"]
        for c in group["template"]["spec"]["containers"]:
            assert c["image"] == IMAGE
            if int(c["resources"].get("limits", {}).get("nvidia.com/gpu", 0)) >= 1:
                gpu_groups.append(group)
    assert gpu_groups, "no worker group has an nvidia.com/gpu limit"
    assert all(g["maxReplicas"] > g["minReplicas"] for g in gpu_groups), "GPU group does not autoscale"
    # rayStartParams values are strings in the CRD.
    for params in [cluster["headGroupSpec"]["rayStartParams"]] + [
            g["rayStartParams"] for g in cluster["workerGroupSpecs"]]:
        assert all(isinstance(v, str) for v in params.values())


def test_kuberay_entrypoint_parses_with_the_job_cli():
    """The entrypoint's arguments resolve to a config: cloud output, MLflow from the env var."""
    argv = shlex.split(load("kuberay-rayjob.yaml")["spec"]["entrypoint"])
    out = subprocess.run([sys.executable, *argv[1:], "--print-config"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    resolved = yaml.safe_load(out.stdout)
    assert re.match(r"^(s3|gs)://", resolved["out"])
    assert resolved["mlflow_uri"] == ""
