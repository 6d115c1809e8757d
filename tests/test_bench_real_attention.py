"""jobs/bench/real_attention.py --space: settings drawn from the tune's space, each scored by masks and label-free."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import random_classifier
from PIL import Image

from inetseg import tuning
from inetseg.config.tuning import DEFAULT_SPACE
from jobs.bench import real_attention as bench


def test_draws_start_with_the_preset_and_stay_in_the_space():
    drawn = bench.sample_space(6, seed=3)
    assert list(drawn)[0] == "default" and drawn["default"] == {}
    assert len(drawn) == 6 and bench.sample_space(6, seed=3) == drawn  # seeded
    for fields in list(drawn.values())[1:]:
        assert fields["delta_background"] <= fields["delta_object"]  # values the pipeline accepts
        for key, value in fields.items():
            (_, (low, high)), = DEFAULT_SPACE[f"attention.{key}"].items()
            assert low <= value <= high, (key, value)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A jobs/bench/real.py-shaped work folder: 8 photos of two tags with masks, split.json, a classifier."""
    root = tmp_path_factory.mktemp("work")
    rng = np.random.default_rng(0)
    train_masks = {}
    for i in range(8):
        tag = ("cat", "dog")[i % 2]
        (root / "images" / tag).mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(exist_ok=True)
        photo, mask = root / "images" / tag / f"p{i}.png", root / "masks" / f"p{i}.png"
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(photo)
        ids = np.zeros((48, 64), np.uint8)
        ids[10:40, 16:50] = 1 + i % 2
        Image.fromarray(ids).save(mask)
        train_masks[str(photo)] = str(mask)
    (root / "data").mkdir()
    (root / "data" / "split.json").write_text(json.dumps({"classes": ["cat", "dog"], "train_masks": train_masks}))
    random_classifier(root / "run" / "classifier", ["cat", "dog"])
    return root


def test_space_run_scores_each_setting_both_ways(work, tmp_path):
    out = tmp_path / "space.json"
    assert bench.main(["--work", str(work), "--space", "4", "--seed", "1", "--max-side", "64", "--input-size", "64",
                       "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["photos"] == 8 and result["space"] == 4 and list(result["variants"])[0] == "default"
    assert len(result["variants"]) == 4
    for v in result["variants"].values():
        assert v["settings"]["objectness"] == 1.0  # the real preset's prior, on every draw
        assert 0 <= v["miou"] <= 1 and 0 <= v["area"] <= 1
        assert 0 <= v["p_in"] <= 1 and 0 <= v["p_out"] <= 1
        # the tune's objective, from the same terms (tuning.evidence_score: means of per-photo terms)
        assert v["objective"] == pytest.approx(v["p_in"] - v["p_out"] - tuning.AREA_WEIGHT * v["area"])
    rho = result["spearman_vs_pseudo_miou"]
    assert set(rho) == {"objective", "p_in", "p_out", "area"}
    variants = list(result["variants"].values())
    expected = tuning.spearman([v["objective"] for v in variants], [v["miou"] for v in variants])
    assert rho["objective"] == pytest.approx(expected, nan_ok=True)


def test_own_variants_run_and_unknown_fields_are_refused(work, tmp_path, capsys):
    out = tmp_path / "own.json"
    assert bench.main(["--work", str(work), "--max-side", "64", "--input-size", "64", "--out", str(out),
                       "--variant", 'one cut={"trimap": false, "segment_scale": 300}']) == 0
    got = json.loads(out.read_text())["variants"]
    assert list(got) == ["one cut"] and got["one cut"]["ignored"] == 0  # no trimap: nothing ignored
    with pytest.raises(SystemExit) as e:
        bench.main(["--work", str(work), "--out", str(out), "--variant", 'x={"segment_scael": 300}'])
    assert e.value.code == 2 and "segment_scael" in capsys.readouterr().err
