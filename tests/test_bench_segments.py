"""jobs/bench/segments.py: segment quality (ASA) of Felzenszwalb and of the edge hierarchy on a labelled folder."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "jobs", "bench"))

import segments  # noqa: E402


def test_asa_is_one_for_segments_inside_the_objects_and_the_majority_share_for_one_segment():
    gt = np.zeros((20, 20), np.uint8)
    gt[5:15, 5:15] = 1
    gt[0, :] = 255  # ignored pixels count for nothing
    assert segments.asa(gt.astype(np.int32) % 255, gt) == 1.0
    one = np.zeros_like(gt, dtype=np.int32)
    assert segments.asa(one, gt) == pytest.approx(280 / 380)


def test_the_edge_hierarchy_separates_a_disc_from_its_background_and_merges_with_the_threshold():
    img = np.full((64, 64, 3), 40, np.uint8)
    cv2.circle(img, (32, 32), 16, (220, 200, 60), -1)
    img = np.clip(img + np.random.default_rng(0).normal(0, 3, img.shape), 0, 255).astype(np.uint8)
    gt = np.zeros((64, 64), np.uint8)
    cv2.circle(gt, (32, 32), 16, 1, -1)
    fine, coarse = segments.edge_hierarchy(img, 0.3), segments.edge_hierarchy(img, 5.0)
    assert segments.asa(fine, gt) > 0.97
    assert coarse.max() == 0 and fine.max() >= 1  # above every boundary's strength: one region


def test_the_bench_scores_a_labelled_folder(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "masks").mkdir()
    for tag in ("cat", "dog"):
        (tmp_path / "images" / tag).mkdir(parents=True)
        for i in range(2):
            img = rng.integers(0, 60, (90, 120, 3), dtype=np.uint8)
            gt = np.zeros((90, 120), np.uint8)
            cv2.rectangle(img, (30, 20), (90, 70), (200, 180, 40), -1)
            cv2.rectangle(gt, (30, 20), (90, 70), 1, -1)
            cv2.imwrite(str(tmp_path / "images" / tag / f"{tag}{i}.jpg"), img)
            cv2.imwrite(str(tmp_path / "masks" / f"{tag}{i}.png"), gt)
    cv2.imwrite(str(tmp_path / "images" / "cat" / "unmasked.jpg"), img)
    out = tmp_path / "out.json"
    got = subprocess.run([sys.executable, os.path.join(ROOT, "jobs", "bench", "segments.py"), "--source",
                          str(tmp_path), "--out", str(out), "--scales", "100", "--thresholds", "0.3"],
                         capture_output=True, text=True, timeout=120)
    assert got.returncode == 0, got.stderr
    result = json.loads(out.read_text())
    assert result["photos"] == 4  # the photo without a mask is not scored
    assert set(result["methods"]) == {"felzenszwalb scale 100", "edge hierarchy 0.3"}
    for m in result["methods"].values():
        assert m["asa"] > 0.95 and m["segments"] >= 2


def test_a_folder_without_masks_is_one_line(tmp_path):
    got = subprocess.run([sys.executable, os.path.join(ROOT, "jobs", "bench", "segments.py"), "--source",
                          str(tmp_path), "--out", str(tmp_path / "o.json")], capture_output=True, text=True, timeout=60)
    assert got.returncode == 2 and "no masks/ folder" in got.stderr and "Traceback" not in got.stderr
