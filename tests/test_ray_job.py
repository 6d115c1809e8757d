"""`ray job submit --working-dir . -- python jobs/full_pipeline.py` against a local `ray start --head`."""
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY, free_port

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A real single-node Ray cluster with its dashboard (job API) on a free port; stopped afterwards."""
    temp = tmp_path_factory.mktemp("ray")
    port, dash = free_port(), free_port()
    # Token auth on, as `ray start --head` has it by default once a token exists; the same token in
    # the environment of the head and of the client, so the test does not depend on ~/.ray.
    # PATH first: the job's `python` must be this environment's, as it is for a user in their venv.
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(16), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    start = [str(BIN / "ray"), "start", "--head", "--num-cpus", "2", "--port", str(port),
             "--dashboard-port", str(dash), "--dashboard-host", "127.0.0.1", "--include-dashboard", "true",
             f"--temp-dir={temp}", "--disable-usage-stats",
             # Ports of its own for the per-node agents: the defaults (52365, ...) may be held by another
             # Ray on this machine, and then the job agent never comes up ("No available agent").
             *(f"--{flag}={free_port()}" for flag in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                       "metrics-export-port", "runtime-env-agent-port",
                                                       "ray-client-server-port"))]
    subprocess.run(start, check=True, env=env, capture_output=True, timeout=180)
    try:
        yield f"http://127.0.0.1:{dash}", env
    finally:
        stop_head(temp)


def stop_head(temp) -> None:
    """SIGKILL this test's Ray only: the processes whose command line names its temp dir, and their children.

    Not `ray stop --force`: that kills every Ray on the machine, a user's cluster or a benchmark too.
    """
    import psutil

    family = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(str(temp) in arg for arg in proc.info["cmdline"] or []):
            try:
                family += [proc, *proc.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
    for proc in family:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(family, timeout=30)


def test_job_submit_runs_the_pipeline(head, tmp_path):
    address, env = head
    out = tmp_path / "job-run"
    # A copy of the working tree without virtual environments or earlier runs, as a user would upload.
    work = tmp_path / "src"
    shutil.copytree(REPO, work, ignore=shutil.ignore_patterns(".venv", "venv", "runs", ".git", "__pycache__",
                                                              ".pytest_cache", "*.egg-info"))
    cmd = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", ".", "--",
           "python", "jobs/full_pipeline.py", f"out={out}", *TINY]
    deadline = time.time() + 180  # on a loaded machine the head's job agent took over 30 s to come up
    while True:
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=900)
        # A just-started head may not have its job agent yet; Ray says to try again (nothing was submitted).
        if "No available agent to submit job" not in proc.stderr + proc.stdout or time.time() > deadline:
            break
        time.sleep(3)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "succeeded" in proc.stdout.lower()
    summary = json.loads((out / "summary.json").read_text())
    # What this test proves is the job path (upload, the job's own Ray, the pipeline to its summary and MLflow
    # run); TINY learns nothing, so the mIoU is only checked to be the evaluation's. That the pipeline learns is
    # test_pipeline_e2e's claim (the demo without fine-tuning against its baseline): a second learning run here
    # would add its ~10 minutes to the suite and prove nothing the job path changes.
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert 0 <= summary["miou"] <= 1 and summary["miou"] == metrics["miou"] and summary["mlflow_run_id"]
    assert summary["counts"]["test_images"] == 8


def test_job_submit_without_token_is_refused(head):
    address, env = head
    env = {k: v for k, v in env.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    env["HOME"] = "/nonexistent-home"  # no ~/.ray/auth_token to fall back on
    proc = subprocess.run([str(BIN / "ray"), "job", "list", "--address", address], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
