"""Duplicate detection: pHash robustness, the band search against brute force, verdicts per tag."""
import itertools

import cv2
import numpy as np
import pytest

from inetseg import dedupe
from inetseg.config import SynthConfig
from inetseg.sources import synth


def _scene(seed: int, size: int = 160) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.integers(0, 255, (size // 8, size // 8, 3), dtype=np.uint8), (3, 3), 0)
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_CUBIC)
    cv2.circle(img, (int(rng.integers(30, size - 30)), int(rng.integers(30, size - 30))), 25, (255, 255, 255), -1)
    return img


def _dist(a: int, b: int) -> int:
    return bin((a ^ b) & (2**64 - 1)).count("1")


def test_phash_survives_resize_and_recompression_but_separates_pictures():
    img = _scene(1)
    h = dedupe.phash(img)
    small = cv2.resize(img, (97, 97), interpolation=cv2.INTER_AREA)
    jpeg = cv2.imdecode(cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 60])[1], cv2.IMREAD_COLOR)
    assert _dist(h, dedupe.phash(jpeg)) <= 4
    others = [dedupe.phash(_scene(s)) for s in range(2, 22)]
    assert min(_dist(h, o) for o in others) > 8
    assert -(2**63) <= h < 2**63  # fits Parquet int64


def test_band_search_equals_brute_force():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, 300, dtype=np.int64).view(np.uint64) * np.uint64(2) + np.uint64(1)
    planted = []
    for i in range(60):  # flip 0..6 bits of some hashes
        flips = rng.choice(64, size=int(rng.integers(0, 7)), replace=False)
        v = int(base[i])
        for f in flips:
            v ^= 1 << int(f)
        planted.append(v)
    h = np.unique(np.concatenate([base, np.array(planted, dtype=np.uint64)]))
    for d in (0, 2, 4, 6):
        got = {tuple(p) for p in dedupe.near_pairs(h, d).tolist()}
        want = {(i, j) for i, j in itertools.combinations(range(len(h)), 2) if _dist(int(h[i]), int(h[j])) <= d}
        assert got == want, d
        assert (d == 0) == (not got)  # the planted ones are found from 1 flipped bit up


def test_big_bucket_is_chunked_not_skipped():
    h = np.arange(1, 500, dtype=np.uint64)  # low bits only: everything shares its high bands
    got = dedupe.near_pairs(h, 1, max_bucket=16)
    want = sum(1 for i, j in itertools.combinations(range(len(h)), 2) if _dist(int(h[i]), int(h[j])) <= 1)
    assert len(got) == want


def test_groups_join_exact_and_near_transitively():
    content = ["a", "b", "a", "c", "d", "e"]
    ph = np.array([0, 7 << 40, 123, 0b111, 0b1111, (1 << 63) - 1], dtype=np.int64)
    g = dedupe.find_groups(content, ph, max_distance=1)
    # 0 = 2 (same bytes); 0 ~ 3? no (3 bits); 3 ~ 4 (1 bit); 5 alone; 1 alone
    assert g[0] == g[2] and g[3] == g[4] and len({g[0], g[1], g[3], g[5]}) == 4
    exact_only = dedupe.find_groups(content, ph, max_distance=-1)
    assert exact_only[3] != exact_only[4] and exact_only[0] == exact_only[2]


@pytest.mark.parametrize("policy", ["drop", "keep"])
def test_verdicts_keep_smallest_id_and_handle_cross_tag(policy):
    ids = ["id3", "id1", "id2", "id9", "id8"]
    tags = ["cat", "cat", "cat", "cat", "dog"]
    groups = np.array([0, 0, 0, 3, 3])
    table = dedupe.verdicts(ids, tags, groups, policy)
    assert table.column("id").to_pylist() == sorted(table.column("id").to_pylist())
    v = {r["id"]: (r["status"], r["dup_of"]) for r in table.to_pylist()}
    assert v["id3"] == ("duplicate", "id1") and v["id2"] == ("duplicate", "id1") and "id1" not in v
    if policy == "drop":
        assert v["id9"] == ("ambiguous", "id8") and v["id8"] == ("ambiguous", "id8")
    else:
        assert v["id9"] == ("duplicate", "id8") and "id8" not in v


def test_synthetic_corpus_images_are_not_near_duplicates_of_each_other():
    cfg = SynthConfig(num_classes=3, images_per_class=12, image_size=96)
    hashes = []
    for i in range(36):
        img = synth.render_search_image(cfg, i % 3, i)[0]
        hashes.append(dedupe.phash(img))
    groups = dedupe.find_groups([str(i) for i in range(36)], np.array(hashes, dtype=np.int64), 4)
    assert len(set(groups.tolist())) == 36
