"""jobs/bench/ingest.py: the fit behind the steady-state figure, the served corpus's distinct files, and the loop
part's three sides doing the same work."""
from __future__ import annotations

import hashlib
import json
import os

import cv2
import numpy as np
import pytest

from jobs.bench import ingest as bench


def test_line_fit_recovers_fixed_cost_and_steady_rate():
    fit = bench.line_fit([5000, 20000], [10 + 5000 / 250, 10 + 20000 / 250])
    assert fit["steady_images_per_s"] == pytest.approx(250)
    assert fit["fixed_seconds"] == pytest.approx(10)


def test_distinct_tree_repeats_files_with_new_bytes_and_the_same_pixels(tmp_path):
    img = (np.arange(48 * 64 * 3) % 251).astype(np.uint8).reshape(48, 64, 3)
    src = tmp_path / "a.jpg"
    cv2.imwrite(str(src), img)
    root = bench.distinct_tree([str(src)], str(tmp_path / "served"), 6, tags=2)
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)
    assert len(files) == 6
    assert len({hashlib.sha1(open(f, "rb").read()).hexdigest() for f in files}) == 6
    decoded = [cv2.imread(f) for f in files]
    assert all(np.array_equal(d, decoded[0]) for d in decoded)


def test_loop_part_runs_the_three_sides_over_the_same_images(tmp_path):
    out = tmp_path / "ingest.json"
    assert bench.main(["--out", str(out), "--parts", "loop", "--loop-sizes", "30,60", "--repeats", "2",
                       "--pool", "25", "--size", "48", "--rows-per-shard", "20", "--num-cpus", "2",
                       "--workdir", str(tmp_path / "work")]) == 0
    got = json.loads(out.read_text())
    assert set(got["ratio_vs_parallel_loop"]) == {"30", "60"}
    for size in ("30", "60"):
        row = got["loop"]["sizes"][size]
        assert len(set(row["ok"].values())) == 1  # every side kept the same images
        assert row["images_per_s"]["ray"]["n"] == 2
    assert "ray" in got["versions"] and got["goals"]["ratio_vs_img2dataset_steady >= 1.0"] is None
