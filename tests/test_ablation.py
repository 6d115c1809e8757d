"""jobs/ablation.py, Table 1 trained: the row arithmetic on plain dicts, then the whole --fast table under Ray on
2 CPUs with a real MLflow store: every row trained and scored, reuse on a re-run, seeds."""
import json
import os
import sys

import mlflow
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from inetseg import masks, metrics, shards  # noqa: E402
from jobs import ablation, ablation_rows  # noqa: E402
from jobs import ablation_table as AT  # noqa: E402

ROWS = [r.name for r in AT.ROWS]
ATTENTION_ROWS = ROWS[:5]


# ---------------------------------------------------------------- pure: rows, seeds, claims

def test_each_row_owns_its_stages_and_borrows_the_rest():
    stages = ["attention", "segmenter", "finetune", "predict", "crf", "evaluate"]
    assert set(AT.stage_owners(AT.BY_NAME["fused"], stages).values()) == {"fused"}
    crf = AT.stage_owners(AT.BY_NAME["crf"], stages)
    assert crf == {"attention": "fused_smooth_trimap", "segmenter": "fused_smooth_trimap",
                   "finetune": "online_finetune", "predict": "online_finetune", "crf": "crf", "evaluate": "crf"}
    assert AT.with_dependencies(["crf", "forward"]) == ["forward", "fused_smooth_trimap", "online_finetune", "crf"]
    assert ablation_rows.row_stages()[0] == "attention"
    assert "evaluate" in ablation_rows.row_stages() and "classifier" not in ablation_rows.row_stages()


def test_fast_mode_overrides_are_all_valid_config_keys():
    """A stale fast-mode key is a ConfigError here, not a silently different fast run."""
    from inetseg import pipeline

    cfg = pipeline.load_config("demo", None, ["out=/tmp/unused", *ablation_rows.fast_overrides()], resolve=False)
    assert cfg.segmenter.epochs == 1 and cfg.split.share == 0.3


def _table(mious: dict[str, list[float]]) -> dict:
    rows = {n: AT.summarise({s: {"miou": v, "seconds": 1.0} for s, v in enumerate(vals)}) for n, vals in mious.items()}
    return rows


def test_seeds_give_mean_and_spread_and_claims_within_the_noise_are_no_difference():
    rows = _table({"fused_smooth": [0.30, 0.32], "fused_smooth_trimap": [0.31, 0.35],
                   "online_finetune": [0.40, 0.42], "crf": [0.39, 0.43]})
    crf = rows["crf"]
    assert crf["miou"] == pytest.approx(0.41) and crf["mean"]["miou"] == pytest.approx(0.41)
    assert crf["spread"]["miou"]["max_min"] == pytest.approx(0.04)
    assert crf["spread"]["miou"]["std"] == pytest.approx(np.std([0.39, 0.43], ddof=1))
    assert set(crf["per_seed"]) == {"0", "1"}
    nz = AT.noise(rows)
    assert nz["row"] == "crf" and nz["points"] == pytest.approx(4.0)
    g = AT.goals(rows, nz["points"])
    assert set(g) == {"trimap_not_worse", "finetune_adds_half_a_point", "crf_adds_half_a_point"}
    assert g["trimap_not_worse"]["met"] and g["trimap_not_worse"]["no_difference"]  # +2 points < 4
    assert g["finetune_adds_half_a_point"]["met"] and not g["finetune_adds_half_a_point"]["no_difference"]
    assert not g["crf_adds_half_a_point"]["met"] and g["crf_adds_half_a_point"]["no_difference"]
    one = _table({"fused": [0.3], "forward": [0.2], "backward": [0.3]})
    assert one["fused"]["spread"] is None and AT.noise(one) is None
    assert not AT.goals(one)["fused_beats_forward_and_backward"]["met"]  # equal to backward: not strictly above


# ---------------------------------------------------------------- the whole --fast table under Ray

@pytest.fixture(scope="module")
def table(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("ablation")
    out = root / "t1.json"
    assert ablation.main(["--out", str(out), "--run", str(root / "run"), "--fast"]) == 0
    return root, out, json.loads(out.read_text())


def test_every_row_is_trained_and_scored(table):
    _, _, result = table
    assert result["row_order"] == ROWS and result["complete"] and result["seeds"] == [0]
    for name in ROWS:
        r = result["rows"][name]
        assert 0 <= r["miou"] <= 1 and r["test_images"] == 8
        assert ("pseudo_miou" in r) == (name in ATTENTION_ROWS)  # pseudo labels: the attention rows only
        if name in ATTENTION_ROWS:
            assert 0 <= r["pseudo_miou"] <= 1 and 0 <= r["precision"] <= 1 and r["pseudo_images"] > 0
            assert (r["ignored"] > 0) == (name == "fused_smooth_trimap")  # only the trimap ignores pixels
    assert set(result["goals"]) == {g[0] for g in AT.GOALS}
    assert all(isinstance(v, bool) for v in result["goals"].values())


def test_online_finetune_trains_a_segmenter_of_its_own(table):
    root, _, result = table
    ft, trimap = result["rows"]["online_finetune"], result["rows"]["fused_smooth_trimap"]
    assert ft["segmenter"] != trimap["segmenter"]
    assert "online_finetune" in ft["segmenter"] and shards.is_complete(ft["segmenter"])
    assert os.path.exists(os.path.join(ft["segmenter"], "model.pt"))
    assert ft["finetune"]["kept"] > 0
    # every row trained on the same images: the classifier's split/train (fine-tuning's held-out share apart)
    base = ablation_rows.load_base("demo", None, ablation_rows.fast_overrides(), str(root / "run"), 0)
    assert base.classifier.images == base.split.out + "/train"
    for name in ATTENTION_ROWS:
        cfg = ablation_rows.row_config(base, AT.BY_NAME[name], base.out + "/ablation")
        assert cfg.attention.images == base.classifier.images and cfg.segmenter.model == base.classifier.out


def test_the_crf_row_scores_crf_predictions(table):
    _, _, result = table
    crf, ft = result["rows"]["crf"], result["rows"]["online_finetune"]
    assert crf["predictions"].endswith("/crf/crf") and crf["segmenter"] == ft["segmenter"]
    t = shards.read_table(crf["predictions"], columns=["gt", "pred", "probs"])
    assert all(p is None for p in t.column("probs").to_pylist())  # the CRF stage's output, not predict's
    n = len(crf["per_seed"]["0"]["per_class_iou"])  # background and the classes
    cm = sum(metrics.confusion_matrix(masks.decode_mask(g), masks.decode_mask(p), n)
             for g, p in zip(t.column("gt").to_pylist(), t.column("pred").to_pylist()))
    assert metrics.miou(cm) == pytest.approx(crf["miou"])
    assert crf["miou_no_crf"] == pytest.approx(ft["miou"])  # before the CRF: the online_finetune row's


def test_markdown_picture_and_mlflow(table):
    root, out, result = table
    md = (root / "t1.md").read_text()
    assert [line.split("|")[1].strip() for line in md.splitlines() if line.startswith("| ") and
            line.split("|")[1].strip() in ROWS] == ROWS
    assert sum(line.startswith("- ") for line in md.splitlines()) == len(AT.GOALS)
    assert (root / "t1.png").read_bytes()[:4] == b"\x89PNG"
    client = mlflow.MlflowClient(f"sqlite:///{root}/run/mlflow.db")
    exp = client.get_experiment_by_name("inetseg").experiment_id
    parents = client.search_runs([exp], "tags.`inetseg.kind` = 'ablation'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.metrics["fused_miou"] == pytest.approx(result["rows"]["fused"]["miou"])
    kids = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parents[0].info.run_id}'")
    assert sorted(k.info.run_name for k in kids) == sorted(ROWS)
    assert {a.path for a in client.list_artifacts(parents[0].info.run_id)} >= {"ablation.json", "ablation.md",
                                                                                "ablation.png"}


def test_a_rerun_reuses_every_trained_segmenter(table, tmp_path):
    root, _, result = table
    models = [os.path.join(result["rows"][n]["segmenter"], "model.pt") for n in ROWS]
    before = [os.stat(m).st_mtime_ns for m in models]
    again = tmp_path / "again.json"
    assert ablation.main(["--out", str(again), "--run", str(root / "run"), "--fast"]) == 0
    rerun = json.loads(again.read_text())
    assert [os.stat(m).st_mtime_ns for m in models] == before
    assert all(rerun["rows"][n]["reused"] for n in ROWS)
    assert {n: rerun["rows"][n]["miou"] for n in ROWS} == {n: result["rows"][n]["miou"] for n in ROWS}


def test_seeds_report_per_seed_mean_and_spread(table, tmp_path):
    root, _, result = table
    dest = tmp_path / "seeds.json"
    rows = ["fused_smooth", "fused_smooth_trimap"]
    assert ablation.main(["--out", str(dest), "--run", str(root / "run"), "--fast", "--seeds", "0,1",
                          "--rows", ",".join(rows)]) == 0
    seeds = json.loads(dest.read_text())
    assert seeds["seeds"] == [0, 1] and seeds["row_order"] == rows
    assert os.path.isdir(root / "run" / "seed1" / "ablation" / "fused_smooth")
    for name in rows:
        r = seeds["rows"][name]
        assert set(r["per_seed"]) == {"0", "1"}
        assert r["per_seed"]["0"]["miou"] == pytest.approx(result["rows"][name]["miou"])  # seed 0 reused
        values = [r["per_seed"][s]["miou"] for s in ("0", "1")]
        assert r["miou"] == r["mean"]["miou"] == pytest.approx(np.mean(values))
        assert r["spread"]["miou"]["max_min"] == pytest.approx(max(values) - min(values))
        assert r["spread"]["miou"]["std"] >= 0
    assert seeds["noise"]["row"] == "fused_smooth_trimap"
    md = (tmp_path / "seeds.md").read_text()
    assert "max-min" in md and "per seed" in md and "noise" in md


# ---------------------------------------------------------------- one-line errors before any work

@pytest.mark.parametrize("args, needle", [
    (["--rows", "forward,nope"], "unknown rows"),
    (["--seeds", "0,x"], "--seeds"),
    (["source=/tmp/photos"], "needs source=synth"),
    (["--name", "crf"], "--name"),
])
def test_bad_input_is_a_one_line_error(args, needle, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        ablation.main(["--out", str(tmp_path / "x.json"), "--run", str(tmp_path / "run"), *args])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert needle in err[-1] and "Traceback" not in "\n".join(err)
    assert not (tmp_path / "run").exists()


def test_a_source_folder_must_be_a_labelled_photo_collection(tmp_path, capsys):
    src = tmp_path / "photos"
    (src / "images" / "cat").mkdir(parents=True)
    for missing in ("no masks/ folder", "no classes.json"):
        with pytest.raises(SystemExit):
            ablation.main(["--out", str(tmp_path / "x.json"), "--source", str(src)])
        assert missing in capsys.readouterr().err
        (src / "masks").mkdir(exist_ok=True)
    with pytest.raises(SystemExit):
        ablation.main(["--out", str(tmp_path / "x.json"), "--source", str(tmp_path / "nothing")])
    assert "no images/<tag>/" in capsys.readouterr().err


def test_source_is_split_as_the_real_bench_splits_it(tmp_path):
    """--source: the collection laid out under <run>/data by tagged.plan_split (jobs/bench/real.py's split), the
    run pointed at it, and the truth for pseudo labels = the masked photos left for training."""
    import cv2

    from inetseg.sources import tagged

    src = tmp_path / "photos"
    for t, tag in enumerate(["cat", "dog"]):
        for i in range(10):
            (src / "images" / tag).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(src / "images" / tag / f"{tag}_{i}.jpg"), np.full((40, 40, 3), 20 * i + 30 * t, np.uint8))
            if i < 8:
                (src / "masks").mkdir(exist_ok=True)
                cv2.imwrite(str(src / "masks" / f"{tag}_{i}.png"), np.full((40, 40), t + 1, np.uint8))
    (src / "classes.json").write_text(json.dumps(["cat", "dog"]))
    args, seeds, rows, overrides, run, truth = ablation.prepare(
        ["--out", str(tmp_path / "x.json"), "--run", str(tmp_path / "run"), "--source", str(src), "--rows", "crf"])
    assert args.preset == "real" and seeds == [0] and rows == ["fused_smooth_trimap", "online_finetune", "crf"]
    data = tmp_path / "run" / "data"
    assert overrides[-3:] == [f"source={data}/train", f"test={data}/test", "ingest.classes=cat,dog"]
    split = tagged.plan_split(str(src), 0.2)
    assert split.test
    assert sorted(os.listdir(data / "test" / "images")) == sorted(os.path.basename(p) for _, p, _ in split.test)
    assert len(truth) == len(split.train_masks) > 0 and all(v["mask"] for v in truth.values())
