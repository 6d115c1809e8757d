"""The whole pipeline (jobs/full_pipeline.py, tiny config) SIGKILLed three times at random points, then run to the
end: every stage finished before the last kill is reused, not redone, and the summary's counts equal an
uninterrupted run's with the same seed."""
import json
import os
import random
import subprocess
import sys
import time

import pytest
from conftest import TINY, kill_tree

from inetseg import registry, shards

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What no training touches is exact. What the filter's trained nets decide is not, even between two uninterrupted
# runs with the same seed: Ray Data hands the training batches over in whatever order its tasks finish, so the
# nets (and the images they keep) differ a little. Measured on TINY: 71, 68 and 70 of 72 images kept by three
# runs; bounded here by a tenth of the images.
EXACT = ("ingested", "ingest_failed", "test_images")
TRAINED = ("filtered", "pseudo_labelled")


def _cmd(out) -> list[str]:
    return [sys.executable, os.path.join(ROOT, "jobs", "full_pipeline.py"), f"out={out}", "registered_model=",
            *TINY]


def _env() -> dict:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": ROOT}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _finished(out) -> dict[str, str]:
    """Stage folder -> its completion time, for every pipeline stage whose output is complete."""
    done = {}
    for stage in registry.REGISTRY.pipeline:
        path = os.path.join(out, stage.folder)
        if shards.is_complete(path):
            done[stage.name] = shards.read_marker(path)["finished_at"]
    return done


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline-kill")
    t0 = time.time()
    ref = subprocess.run(_cmd(root / "ref"), env=_env(), capture_output=True, text=True, timeout=1200)
    assert ref.returncode == 0, ref.stderr[-3000:]
    whole = time.time() - t0
    out, rng, kills = root / "killed", random.Random(11), []
    for _ in range(3):  # each attempt lives for 12-32 % of an uninterrupted run (start-up included), then SIGKILL:
        # together short of a whole run, so the last kill always leaves stages to do
        proc = subprocess.Popen(_cmd(out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.12, 0.32) * whole)
        kill_tree(proc)
        kills.append(_finished(out))
    last = subprocess.run(_cmd(out), env=_env(), capture_output=True, text=True, timeout=1200)
    assert last.returncode == 0, last.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    return (json.loads((root / "ref" / "summary.json").read_text()), summary, kills, _finished(out), last.stderr,
            ref.stdout + ref.stderr)


def test_a_run_writes_a_console_a_person_can_read(runs):
    """Written to a file (not a terminal), the tiny run printed 1.46 MB of Ray progress lines before the stages'
    own lines became the progress; 23 KB after. Its trainings then still printed Ray's ~5 lines per epoch
    (reports, checkpoints, datasets) and no line of their own; now one line per epoch, theirs (13 KB -> 7 KB)."""
    console = runs[-1]
    assert len(console.encode()) < 200_000
    assert "classifier: epoch 2/2  loss" in console and "segmenter: epoch 1/1  loss" in console, console[-3000:]
    for ray_line in ("Reporting training result", "Checkpoint successfully created", "execution finished in",
                     "Progress bars disabled", "Requesting resources"):
        assert ray_line not in console, ray_line


def test_the_kills_landed_mid_run(runs):
    _, _, kills, after, *_ = runs
    assert len(kills[-1]) < len(after)  # the last kill left stages to do
    assert any(kills)  # and some were finished before it


def test_every_stage_finished_before_the_last_kill_is_reused(runs):
    _, _, kills, after, log, _ = runs
    for stage, finished_at in kills[-1].items():
        assert after[stage] == finished_at, f"{stage} was redone"
        assert f"{stage}: reusing finished output" in log


def test_the_resumed_run_equals_an_uninterrupted_one(runs):
    ref, summary, *_ = runs
    assert {k: summary["counts"].get(k) for k in EXACT} == {k: ref["counts"].get(k) for k in EXACT}
    for key in TRAINED:
        assert abs(summary["counts"][key] - ref["counts"][key]) <= 0.1 * ref["counts"]["ingested"], key
    assert summary["baseline_miou"] == pytest.approx(ref["baseline_miou"])
    # Training is not bit-reproducible (Ray Data's block order, the augmentations' generator), and TINY's segmenter
    # sits around the all-background baseline, so its scores are not comparable between two runs: uninterrupted and
    # resumed runs scored 21.6 vs 24.3 % (suite of 2026-12-01) and 20.3 vs 14.4 % (CI of 2026-12-07). Whether a run
    # learns is test_pipeline_e2e's; this test's check is the stage reuse and the exact counts above. What must
    # match is the shape of the report: the same classes scored, every score a proportion.
    assert summary["classes"] == ref["classes"]
    assert set(summary) == set(ref)
    for key in ("miou", "pseudo_label_miou"):
        assert 0.0 <= summary[key] <= 1.0 and 0.0 <= ref[key] <= 1.0, key
