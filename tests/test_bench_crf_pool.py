"""jobs/bench/crf.py --source: the CRF stage's pool and the bare loop label the same photos alike, and the JSON
carries the ratio per core with its spread and the versions."""
from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest

from jobs.bench import crf as bench


@pytest.fixture(scope="module")
def street(tmp_path_factory):
    """A CamVid-like folder: 6 photos 96 x 72 with masks of ids 0..10 (and 11, void)."""
    root = tmp_path_factory.mktemp("street")
    rng = np.random.default_rng(0)
    for d in ("images", "masks"):
        os.makedirs(root / d)
    for i in range(6):
        mask = np.zeros((72, 96), np.uint8)
        mask[36:] = 3
        mask[10:40, 20 + i * 5:50 + i * 5] = 8
        mask[:4] = 11
        image = (np.stack([mask * 20, 255 - mask * 20, (mask * 37) % 255], -1) + rng.integers(0, 20, (72, 96, 3)))
        cv2.imwrite(str(root / "images" / f"p{i}.png"), image.astype(np.uint8))
        cv2.imwrite(str(root / "masks" / f"p{i}.png"), mask)
    return root


def test_pool_and_bare_loop_agree_and_the_ratio_is_written(street, tmp_path):
    out = tmp_path / "crf.json"
    assert bench.main(["--source", str(street), "--out", str(out), "--images", "6", "--repeats", "2",
                       "--batch", "2", "--workers", "2"]) == 0
    got = json.loads(out.read_text())
    assert got["same_output"] is True  # the same work on both sides
    assert got["settings"]["images"] == 6 and got["settings"]["workers"] == 2
    assert got["ratio_vs_bare_per_core"] > 0 and got["images_per_s"]["stage"]["n"] == 2
    assert got["ratio_vs_bare_per_core"] == pytest.approx(got["ratio_vs_bare"]["median"] / 2)
    assert "pydensecrf2" in got["versions"]


def test_a_source_without_masks_is_a_one_line_error(tmp_path):
    os.makedirs(tmp_path / "images")
    with pytest.raises(FileNotFoundError, match="needs images/ and masks/"):
        bench.main(["--source", str(tmp_path), "--out", str(tmp_path / "x.json")])
