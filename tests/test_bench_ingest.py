"""jobs/bench/ingest.py: the fit behind the steady-state figure, the served corpus's distinct files, and the loop
part's three sides doing the same work."""
from __future__ import annotations

import hashlib
import json
import os

import cv2
import numpy as np
import pytest

from inetseg import config as C
from inetseg import dedupe
from jobs.bench import ingest as bench


def test_line_fit_recovers_fixed_cost_and_steady_rate():
    fit = bench.line_fit([5000, 20000], [10 + 5000 / 250, 10 + 20000 / 250])
    assert fit["steady_images_per_s"] == pytest.approx(250)
    assert fit["fixed_seconds"] == pytest.approx(10)


def test_distinct_tree_repeats_photos_as_pictures_the_duplicate_pass_keeps(tmp_path):
    rng = np.random.default_rng(0)
    img = cv2.resize(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), (64, 48), interpolation=cv2.INTER_CUBIC)
    src = tmp_path / "a.jpg"
    cv2.imwrite(str(src), img)
    n = 10  # the original, the 7 other rotations/mirrorings, and two cropped ones
    root = bench.distinct_tree([str(src)], str(tmp_path / "served"), n, tags=2)
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)
    assert len(files) == n
    assert len({hashlib.sha1(open(f, "rb").read()).hexdigest() for f in files}) == n
    hashes = np.array([dedupe.phash(cv2.cvtColor(cv2.imread(f), cv2.COLOR_BGR2RGB)) for f in files]).astype(np.uint64)
    assert len(set(hashes.tolist())) == n
    # The ingest's own near-duplicate search at its default distance finds no pair among them.
    assert len(dedupe.near_pairs(hashes, C.IngestConfig().dedupe_max_distance)) == 0


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


def test_combine_puts_parts_run_apart_into_one_result_with_each_runs_settings(tmp_path):
    def ratio(v: float) -> dict:
        return {"median": v, "min": v, "max": v}

    small = {"settings": {"repeats": 3}, "loop": {"sizes": {"2000": {"ratio_vs_parallel_loop": ratio(0.5)},
                                                             "8000": {"ratio_vs_parallel_loop": ratio(0.8)}}}}
    big = {"settings": {"repeats": 2}, "loop": {"sizes": {"32000": {"ratio_vs_parallel_loop": ratio(0.92)}}},
           "memory": {"pss_ratio_4n_vs_n": 1.07, "hoard_pss_ratio_4n_vs_n": 3.9}}
    paths = []
    for name, d in (("small.json", small), ("big.json", big)):
        (tmp_path / name).write_text(json.dumps(d))
        paths.append(str(tmp_path / name))
    out = tmp_path / "ingest.json"
    assert bench.main(["--out", str(out), "--combine", *paths]) == 0
    got = json.loads(out.read_text())
    assert got["ratio_vs_parallel_loop"] == {"2000": 0.5, "8000": 0.8, "32000": 0.92}
    assert got["goals"]["ratio_vs_parallel_loop >= 0.9"] is False  # 2k and 8k miss
    assert got["goals"]["pss_ratio_4n_vs_n <= 1.25"] is True and "ratio_vs_img2dataset_steady" not in got
    assert [r["settings"]["repeats"] for r in got["loop"]["runs"]] == [3, 2]
    assert got["combined_from"] == {"loop": ["small.json", "big.json"], "memory": ["big.json"]}


def test_combine_names_an_unreadable_part_file_in_one_line(tmp_path):
    with pytest.raises(SystemExit, match="cannot read .*missing.json"):
        bench.main(["--out", str(tmp_path / "ingest.json"), "--combine", str(tmp_path / "missing.json")])
