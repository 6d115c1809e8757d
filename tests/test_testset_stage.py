"""The test-set stage: an images/ + masks/ folder -> the TEST table and its marker; a re-run reuses it."""
import json

import cv2
import numpy as np
import pytest

from inetseg import masks, shards
from inetseg.config import TestSetConfig
from inetseg.schema import TEST
from inetseg.stages import testset


@pytest.fixture()
def folder(tmp_path):
    root = tmp_path / "test"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for stem, (h, w), ext in (("a", (40, 60), ".png"), ("b", (50, 30), ".jpg")):
        cv2.imwrite(str(root / "images" / f"{stem}{ext}"), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        mask = np.zeros((h, w), np.uint8)
        mask[h // 4:h // 2, w // 4:w // 2] = 1 if stem == "a" else 2
        cv2.imwrite(str(root / "masks" / f"{stem}.png"), mask)
    (root / "images" / "unpaired.png").write_bytes((root / "images" / "a.png").read_bytes())
    (root / "classes.json").write_text(json.dumps({"classes": ["background", "cat", "dog"]}))
    return root


def test_testset_table_marker_and_reuse(ray_session, folder, tmp_path):
    cfg = TestSetConfig(test=str(folder), out=str(tmp_path / "out"))
    first = testset.run(cfg)
    assert first["images"] == 2 and first["classes"] == ["cat", "dog"] and not first.get("reused")
    t = shards.read_table(cfg.out).sort_by("id")
    assert t.schema.equals(TEST) and t.column("id").to_pylist() == ["a", "b"]
    assert list(zip(t.column("height").to_pylist(), t.column("width").to_pylist())) == [(40, 60), (50, 30)]
    assert sorted(np.unique(masks.decode_mask(t.column("mask")[1].as_py())).tolist()) == [0, 2]
    again = testset.run(cfg)
    assert again.get("reused") and again["fingerprint"] == first["fingerprint"]
    # The run's classes, when given, are what the marker records (and a change is a new fingerprint).
    named = testset.run(TestSetConfig(test=str(folder), out=cfg.out, classes=["dog", "cat"]))
    assert named["classes"] == ["dog", "cat"] and not named.get("reused")


def test_testset_without_pairs_is_a_clear_error(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(FileNotFoundError, match="no image/mask pairs"):
        testset.run(TestSetConfig(test=str(tmp_path), out=str(tmp_path / "out")))
