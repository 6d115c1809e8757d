"""`inetseg tune`: the space checked against the pipeline's keys, trials sharing stages by content key, the
label-free objective, and a real Ray Tune search (Optuna + ASHA) killed mid-way and resumed."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import TINY, kill_tree

from inetseg import config as C
from inetseg import pipeline, shards, tuning
from inetseg.config.tuning import DEFAULT_SPACE, TuneConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORDER = ["synth", "ingest", "testset", "filter", "split", "classifier", "attention", "segmenter", "finetune",
         "predict", "crf", "evaluate"]


@pytest.fixture(scope="module")
def demo_cfg():
    return pipeline.load_config("demo", None, ["out=/tmp/x", "finetune.enabled=true"])


def test_the_default_space_names_real_keys_and_valid_ranges(demo_cfg):
    space = tuning.check_space(DEFAULT_SPACE, demo_cfg)
    assert set(space) == set(DEFAULT_SPACE)
    assert tuning.first_stage(list(space), ORDER) == "attention"  # the classifier is trained once


def test_the_example_tune_file_is_the_default_search_written_out():
    tcfg = C.load(TuneConfig, os.path.join(ROOT, "jobs", "configs", "tune.yaml"), [])
    assert tcfg.space == DEFAULT_SPACE and tcfg == TuneConfig()


@pytest.mark.parametrize("space, needle", [
    ({"attention.delta_objekt": {"uniform": [0, 1]}}, "unknown pipeline key 'attention.delta_objekt'"),
    ({"attention": {"uniform": [0, 1]}}, "not a value a trial can set"),
    ({"attention.delta_object": {"gauss": [0, 1]}}, "give one of uniform"),
    ({"attention.delta_object": {"uniform": [0.9, 0.1]}}, "low < high"),
    ({"crf.bilateral_sxy": {"loguniform": [0, 10]}}, "loguniform needs low > 0"),
    ({"attention.maps": {"uniform": [0, 1]}}, "uniform on a str key"),
])
def test_a_bad_space_is_a_one_line_error(demo_cfg, space, needle):
    with pytest.raises(C.ConfigError, match=needle):
        tuning.check_space(space, demo_cfg)


def test_trials_report_after_attention_and_the_segmenter_when_more_follows():
    from inetseg.train.tune_trial import rung_value, rungs_of

    trial = ["attention", "segmenter", "finetune"]
    assert rungs_of(trial, ORDER) == ["attention", "segmenter", "final"]
    assert rungs_of(trial, ORDER, label_free=False) == ["segmenter", "final"]  # val_miou: no model after attention
    assert rungs_of(["attention", "segmenter"], ORDER) == ["attention", "final"]  # no fine-tuning: ends there
    assert rungs_of(["finetune"], ORDER) == ["final"]  # only mu tuned: one report
    assert [rung_value(i, 3) for i in range(3)] == [1, 3, 9]


def test_trials_share_every_stage_before_their_first_differing_key():
    a = {"attention.delta_object": 0.7, "crf.bilateral_sxy": 10.0}
    b = {"attention.delta_object": 0.7, "crf.bilateral_sxy": 30.0}
    c = {"attention.delta_object": 0.6, "crf.bilateral_sxy": 10.0}
    for stage in ("attention", "segmenter", "finetune"):  # b changes only the CRF: reuses a's segmenters
        assert tuning.stage_key(stage, a, ORDER) == tuning.stage_key(stage, b, ORDER)
        assert tuning.stage_key(stage, a, ORDER) != tuning.stage_key(stage, c, ORDER)
    assert tuning.stage_key("crf", a, ORDER) != tuning.stage_key("crf", b, ORDER)


def test_values_are_applied_typed_and_rules_across_keys_still_hold(demo_cfg):
    cfg = tuning.apply(demo_cfg, {"attention.delta_object": 0.7, "segmenter.epochs": 3.0, "attention.maps": "fused"})
    assert cfg.attention.delta_object == 0.7 and cfg.segmenter.epochs == 3 and isinstance(cfg.segmenter.epochs, int)
    assert demo_cfg.attention.delta_object == 0.65  # the base config is not touched
    with pytest.raises(C.ConfigError, match="delta_background <= delta_object"):
        tuning.apply(demo_cfg, {"attention.delta_object": 0.3, "attention.delta_background": 0.4})


def test_the_objective_prefers_the_tight_mask_to_the_whole_image_and_to_nothing():
    # One image, a confident classifier: P(tag | I) = 0.9, P(tag | grey) = 0.2.
    whole = tuning.evidence_score([0.9], [0.2], [1.0])  # M = everything: the rest is grey
    empty = tuning.evidence_score([0.2], [0.9], [0.0])  # M = nothing
    tight = tuning.evidence_score([0.8], [0.3], [0.15])  # the object: named alone, missed without it
    loose = tuning.evidence_score([0.85], [0.25], [0.5])  # object and half the background
    assert tight > loose > whole and tight > empty
    assert tight == pytest.approx(0.8 - 0.3 - tuning.AREA_WEIGHT * 0.15)
    # The size term's weight is the search's to set; without it the whole image is the best mask.
    assert tuning.evidence_score([0.9], [0.2], [1.0], 0.0) > tuning.evidence_score([0.8], [0.3], [0.15], 0.0)
    assert TuneConfig().area_weight == tuning.AREA_WEIGHT
    assert tuning.evidence_score([], [], []) == tuning.INVALID


def test_spearman_matches_scipy():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=12), rng.normal(size=12)
    b[3] = b[4]  # a tie
    assert tuning.spearman(a, b) == pytest.approx(spearmanr(a, b).statistic)
    assert np.isnan(tuning.spearman([1, 1, 1], [1, 2, 3]))


def test_the_best_values_go_into_the_users_config():
    out = tuning.best_config({"attention": {"input_size": 256}, "out": "runs/x"},
                             {"attention.delta_object": 0.7, "crf.bilateral_sxy": 12.0})
    assert out == {"attention": {"input_size": 256, "delta_object": 0.7}, "crf": {"bilateral_sxy": 12.0},
                   "out": "runs/x"}


@pytest.mark.parametrize("keys, needle", [
    (["num_samples=0"], "num_samples and max_concurrent must be >= 1"),
    (["objective=val_miou"], "objective=val_miou needs val=DIR"),
    (["space={}"], "space is empty"),
    (["search=grid"], "search must be one of optuna, random"),
    (["reduction_factor=1"], "reduction_factor must be >= 2"),
])
def test_bad_tune_keys_are_one_line_errors(keys, needle):
    with pytest.raises(C.ConfigError, match=needle):
        C.load(TuneConfig, None, keys)


# ---------------------------------------------------------------- a real search, killed and resumed

SPACE = """num_samples: 3
val_share: 0.2
space:
  attention.delta_object: {uniform: [0.55, 0.8]}
  attention.delta_background: {uniform: [0.2, 0.5]}
  crf.bilateral_sxy: {loguniform: [5.0, 40.0]}
"""
# TINY without filter rounds, fine-tuning on (split.share: enough held-out images; mu=0: a 2-epoch classifier
# names no tag above 0.4), so each trial reports twice and ASHA can stop one after its first segmenter.
KEYS = [k for k in TINY if not k.startswith("filter.")] + [
    "filter.rounds=0", "finetune.enabled=true", "split.share=0.3", "finetune.mu=0.0"]


def _tune(out, spec) -> tuple[list[str], dict]:
    """(command, environment) of jobs/tune.py over `out` with the search file `spec` and the test's keys."""
    cmd = [sys.executable, os.path.join(ROOT, "jobs", "tune.py"), "--out", str(out), "--tune", str(spec),
           "registered_model=inetseg-tuned", *KEYS]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": ROOT}
    env.pop("MLFLOW_TRACKING_URI", None)
    return cmd, env


def _finished_trials(search: str) -> dict[str, int]:
    """trial folder -> reports written, for trials that reported their final objective."""
    done = {}
    for name in os.listdir(search) if os.path.isdir(search) else []:
        path = os.path.join(search, name, "result.json")
        if os.path.exists(path):
            lines = [json.loads(x) for x in open(path) if x.strip()]
            if any(r.get("stage") == "final" for r in lines):
                done[name] = len(lines)
    return done


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    """jobs/tune.py SIGKILLed once a trial has finished, then run again to the end: (out, before, summary, log)."""
    out = tmp_path_factory.mktemp("tune")
    spec = out / "tune.yaml"
    spec.write_text(SPACE)
    cmd, env = _tune(out, spec)
    search_dir = str(out / "tune" / "search")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=str(out))
    deadline = time.time() + 900
    try:
        while not _finished_trials(search_dir) and proc.poll() is None and time.time() < deadline:
            time.sleep(2)
        time.sleep(6)  # the search saves its state every 2 s (tune.py): let it record the finished trial
    finally:
        kill_tree(proc)
    before = _finished_trials(search_dir)
    assert before, "no trial finished before the kill"
    classifier_marker = shards.read_marker(str(out / "tune" / "base" / "classifier"))
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200, cwd=str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "tune" / "summary.json").read_text())
    return out, before, classifier_marker, summary, done.stdout + done.stderr


def test_a_killed_search_resumes_without_rerunning_finished_trials(search):
    out, before, classifier_marker, summary, _ = search
    after = _finished_trials(str(out / "tune" / "search"))
    for trial, reports in before.items():  # each finished trial kept, with no new report
        assert after[trial] == reports
    assert summary["trials"] == 3 and summary["finished"] + summary["stopped_early"] == 3
    # the classifier, before every tuned key, was trained once: the resumed search reused it
    assert shards.read_marker(str(out / "tune" / "base" / "classifier"))["finished_at"] == \
        classifier_marker["finished_at"]


def test_a_search_is_not_resumed_with_another_objective(search):
    """The finished search resumed with another size weight: refused in one line before any work, nothing
    changed (trials scored two ways would be ranked together)."""
    out, *_ = search
    spec = out / "tune-w1.yaml"
    spec.write_text(SPACE + "area_weight: 1.0\n")
    before = (out / "tune" / "trials.json").read_text()
    cmd, env = _tune(out, spec)
    got = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=str(out))
    assert got.returncode != 0 and "Traceback" not in got.stderr
    assert f"area_weight={tuning.AREA_WEIGHT!r}" in got.stderr and "tune.resume=false" in got.stderr, got.stderr[-2000:]
    assert (out / "tune" / "trials.json").read_text() == before


def test_trials_rerun_only_the_stages_their_values_change(search):
    out, *_ = search
    trials = json.loads((out / "tune" / "trials.json").read_text())
    keys = {tuning.stage_key("attention", t["config"], ORDER) for t in trials}
    pseudo = [d for d in os.listdir(out / "tune" / "stages" / "pseudo") if not d.endswith(".lock")]
    assert sorted(pseudo) == sorted(keys)  # one attention run per distinct setting, none for shared stages
    assert not os.path.exists(out / "tune" / "stages" / "classifier")


def test_validation_images_are_kept_out_of_every_training(search):
    out, *_ = search
    split = out / "tune" / "base" / "split"
    ids = {name: set(shards.read_table(str(split / name), columns=["id"]).column("id").to_pylist())
           for name in ("train", "heldout", "val")}
    assert ids["val"] and not ids["val"] & ids["train"] and not ids["val"] & ids["heldout"]
    assert shards.read_marker(str(out / "tune" / "base" / "classifier"))  # trained on split/train only
    trials = json.loads((out / "tune" / "trials.json").read_text())
    # (a trial stopped after attention scored its pseudo labels, on training images, not these)
    assert all(t["val_images"] == len(ids["val"]) for t in trials if t["valid"] and t["stage"] != "attention")


def test_each_trial_reports_at_asha_rungs_attention_segmenter_final(search):
    out, *_ = search
    search_dir = out / "tune" / "search"
    seen = 0
    for name in os.listdir(search_dir):
        path = search_dir / name / "result.json"
        if not path.exists():
            continue
        reports = [json.loads(x) for x in open(path) if x.strip()]
        # a resumed trial may repeat its last report; the rungs it reached are in order, each at ASHA's time
        stages = list(dict.fromkeys(r["stage"] for r in reports))
        assert stages == ["attention", "segmenter", "final"][:len(stages)], stages
        assert all(r["rung"] == {"attention": 1, "segmenter": 3, "final": 9}[r["stage"]] for r in reports)
        seen += 1
    assert seen == 3
    for t in json.loads((out / "tune" / "trials.json").read_text()):  # each rung's objective kept
        if not t["valid"]:
            continue
        assert set(t["rungs"]) == set(["attention", "segmenter", "final"][:len(t["rungs"])]), t["rungs"]
        assert t["rungs"][t["stage"]] == pytest.approx(t["objective"])
        # ... and its terms, which give that objective back (tuning.evidence_score: p_in - p_out - w area)
        assert set(t["rung_terms"]) == set(t["rungs"]), t["rung_terms"]
        for stage, terms in t["rung_terms"].items():
            score = terms["p_in"] - terms["p_out"] - tuning.AREA_WEIGHT * terms["area"]
            assert score == pytest.approx(t["rungs"][stage])


def test_best_yaml_is_a_pipeline_config_with_the_best_values(search):
    out, _, _, summary, log = search
    cfg = pipeline.load_config("demo", str(out / "tune" / "best.yaml"))
    for key, value in summary["best"].items():
        section, name = key.split(".")
        assert getattr(getattr(cfg, section), name) == pytest.approx(value)
    assert cfg.split.val_share == 0  # the final run trains on every image again
    trials = json.loads((out / "tune" / "trials.json").read_text())
    finished = [t for t in trials if t["finished"] and t["valid"]]
    assert summary["best_objective"] == max(t["objective"] for t in finished)
    assert "best objective" in log and "best.yaml" in log
    assert "not yet shown to rank settings by quality" in log  # the label-free best is not to be used unchecked


def test_each_trial_is_a_nested_mlflow_run_and_the_best_segmenter_is_champion(search):
    from mlflow import MlflowClient

    out, _, _, summary, _ = search
    client = MlflowClient(f"sqlite:///{out}/tune/mlflow.db")
    exp = client.get_experiment_by_name("inetseg")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("inetseg.kind") == "tune"]
    assert len(parents) == 1  # the resumed search kept its parent run
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == 3
    assert all("attention.delta_object" in r.data.params and "objective" in r.data.metrics for r in children)
    version = client.get_model_version_by_alias("inetseg-tuned", "champion")
    assert summary["registered_model"] == f"models:/inetseg-tuned/{version.version}"
