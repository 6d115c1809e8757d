"""Real photo sources: the labelled split, checks before any training, a run with no test set."""
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import TINY

from inetseg import baselines, pipeline, shards
from inetseg import config as C
from inetseg.sources import tagged

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["cat", "dog", "horse"]


def _photo(path: Path, seed: int, size=(48, 64)) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), rng.integers(0, 255, (*size, 3), dtype=np.uint8))


def _collection(root: Path, per_tag: int = 20, masked: int = 10) -> Path:
    """images/<tag>/<tag>_i.jpg, masks/<tag>_i.png for the first `masked` of each tag, classes.json."""
    for t, tag in enumerate(CLASSES):
        for i in range(per_tag):
            _photo(root / "images" / tag / f"{tag}_{i}.jpg", 100 * t + i)
            if i < masked:
                (root / "masks").mkdir(parents=True, exist_ok=True)
                mask = np.zeros((48, 64), np.uint8)
                mask[10:30, 20:40] = t + 1
                cv2.imwrite(str(root / "masks" / f"{tag}_{i}.png"), mask)
    (root / "classes.json").write_text(json.dumps(CLASSES))
    return root


def test_split_holds_out_masked_photos_only_and_is_stable(tmp_path):
    src = _collection(tmp_path / "src")
    _photo(tmp_path / "noise" / "street_0.png", 7)
    for i in range(1, 6):
        _photo(tmp_path / "noise" / f"street_{i}.png", 7 + i)
    split = tagged.plan_split(str(src), 0.5, str(tmp_path / "noise"), 2)
    again = tagged.plan_split(str(src), 0.5, str(tmp_path / "noise"), 2)
    assert split.test == again.test and split.train == again.train
    test_photos = {p for _, p, _ in split.test}
    assert test_photos and all(os.path.exists(m) for _, _, m in split.test)
    train_photos = {p for ps in split.train.values() for p in ps}
    assert not test_photos & train_photos
    assert len(test_photos) + len(train_photos) == 60
    assert all(int(os.path.basename(p).split("_")[1].split(".")[0]) < 10 for p in test_photos)  # masked only
    assert set(split.train_masks) <= train_photos and len(split.train_masks) == 30 - len(test_photos)
    used = [p for ps in split.distractors.values() for p in ps]
    assert len(used) == len(set(used)) == 6
    dirs = tagged.layout(split, str(tmp_path / "work"))
    assert json.loads((Path(dirs["test"]) / "classes.json").read_text()) == CLASSES
    assert len(os.listdir(Path(dirs["test"]) / "images")) == len(test_photos)
    assert sorted(os.listdir(dirs["train"])) == CLASSES
    assert len(os.listdir(Path(dirs["train"]) / "cat")) == len(split.train["cat"]) + 2


def test_centre_prior_covers_the_asked_share():
    m = baselines.centre_prior(375, 500, 3)
    assert set(np.unique(m)) == {0, 3}
    assert abs((m == 3).mean() - 0.4) < 0.005
    assert m[187, 250] == 3 and m[0, 0] == 0


def _job(*args):
    return subprocess.run([sys.executable, str(REPO / "jobs" / "full_pipeline.py"), *args], capture_output=True,
                          text=True, timeout=120)


def _one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_a_bad_test_folder_fails_before_any_training(tmp_path):
    src = _collection(tmp_path / "src", per_tag=4, masked=2)
    dirs = tagged.layout(tagged.plan_split(str(src), 0.5), str(tmp_path / "data"))
    out = tmp_path / "run"
    base = ["--preset", "real", f"source={dirs['train']}", f"out={out}"]
    _one_line_error(_job(*base, f"test={tmp_path}/nope"), "test folder not found")
    (Path(dirs["test"]) / "classes.json").write_text(json.dumps(["dog", "cat", "horse"]))
    _one_line_error(_job(*base, f"test={dirs['test']}"), "differ from the source's classes")
    os.remove(Path(dirs["test"]) / "classes.json")
    _one_line_error(_job(*base, f"test={dirs['test']}"), "classes.json")
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    _one_line_error(_job(*base, f"test={empty}"), "no image/mask pairs")
    assert not (out / "filter").exists() and not (out / "images").exists()


def test_paper_preset_needs_a_real_source():
    with pytest.raises(C.ConfigError, match="needs a real source"):
        pipeline.load_config("paper")
    with pytest.raises(C.ConfigError, match="for real photos"):
        pipeline.load_config("paper", None, ["source=synth"])
    assert pipeline.load_config("paper", None, ["source=/data/crawl"]).ingest.source == "/data/crawl"
    _one_line_error(_job("--preset", "paper", "--print-config"), "source=DIR")


def test_a_run_without_test_set_stops_after_the_segmenter(ray_session, tmp_path):
    src = _collection(tmp_path / "src", per_tag=12, masked=0)
    out = tmp_path / "run"
    cfg = pipeline.load_config("real", None, [f"source={src / 'images'}", f"out={out}", *TINY])
    summary = pipeline.run(cfg)
    assert summary["miou"] is None and summary["per_class_iou"] == {}
    assert shards.is_complete(cfg.segmenter.out)
    assert not (out / "predictions").exists()
    assert json.loads((out / "summary.json").read_text())["classes"] == CLASSES
    assert "nothing scored" in pipeline.format_table(summary)
