"""The ingest stage under Ray: bad files are counted per reason, never crash, never lose rows."""
import json

import cv2
import numpy as np
import pyarrow.compute as pc
import pytest

from inetseg import config as C
from inetseg import shards
from inetseg.ingest.duplicates import duplicates_file
from inetseg.schema import IMAGES
from inetseg.stages import ingest


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("src")
    rng = np.random.default_rng(0)
    for tag in ("cat", "dog"):
        (root / tag).mkdir()
        for i in range(6):
            img = rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)
            cv2.imwrite(str(root / tag / f"{i}.jpg"), img)
    (root / "cat" / "garbage.jpg").write_bytes(b"this is not an image")
    (root / "cat" / "empty.png").write_bytes(b"")
    good = cv2.imencode(".jpg", rng.integers(0, 255, (90, 120, 3), dtype=np.uint8))[1].tobytes()
    (root / "dog" / "truncated.jpg").write_bytes(good[:200])
    cv2.imwrite(str(root / "dog" / "tiny.png"), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(root / "dog" / "sliver.png"), np.zeros((40, 400, 3), np.uint8))
    return root


def test_ingest_counts_every_file(ray_session, source, tmp_path):
    cfg = C.IngestConfig(source=str(source), out=str(tmp_path / "images"), max_side=64, rows_per_shard=4,
                         files_per_task=4)
    meta = ingest.run(cfg)
    stats = json.loads((tmp_path / "images" / "stats.json").read_text())
    assert stats["total"] == 17
    assert stats["ok"] + sum(stats["failed"].values()) == stats["total"]
    assert stats["ok"] == 12
    assert stats["failed"]["not_an_image"] == 1 and stats["failed"]["empty"] == 1
    assert stats["failed"]["too_small"] == 1 and stats["failed"]["bad_aspect"] == 1
    assert stats["failed"].get("undecodable", 0) == 1
    assert meta["classes"] == ["cat", "dog"]
    table = shards.read_table(cfg.out)
    assert table.schema.equals(IMAGES) and table.num_rows == 17
    ok = table.filter(pc.equal(table.column("status"), "ok"))
    assert max(ok.column("height").to_pylist() + ok.column("width").to_pylist()) <= 64
    assert len(set(table.column("id").to_pylist())) == 17


def test_ingest_rerun_is_skipped_and_class_order_kept(ray_session, source, tmp_path):
    out = str(tmp_path / "images")
    cfg = C.IngestConfig(source=str(source), out=out, classes=["dog", "cat"], max_side=64)
    first = ingest.run(cfg)
    again = ingest.run(cfg)
    assert again.get("reused") and again["fingerprint"] == first["fingerprint"]
    t = shards.read_table(out, columns=["tag", "label"])
    pairs = set(zip(t.column("tag").to_pylist(), t.column("label").to_pylist()))
    assert pairs == {("dog", 1), ("cat", 2)}


def test_missing_source_and_class_are_clear_errors(ray_session, source, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        ingest.run(C.IngestConfig(source=str(tmp_path / "nope"), out=str(tmp_path / "o")))
    with pytest.raises(FileNotFoundError, match="horse"):
        ingest.run(C.IngestConfig(source=str(source), out=str(tmp_path / "o"), classes=["horse"]))


def _smooth(rng, h=120, w=160):
    """A picture with structure (pHash of pure noise is not what real photos look like)."""
    small = rng.integers(0, 255, (h // 10, w // 10, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


@pytest.mark.parametrize("policy", ["drop", "keep"])
def test_duplicates_within_and_across_tags(ray_session, tmp_path, policy):
    rng = np.random.default_rng(5)
    for tag in ("cat", "dog"):
        (tmp_path / "src" / tag).mkdir(parents=True)
    pics = [_smooth(rng) for _ in range(6)]
    for i, p in enumerate(pics):
        cv2.imwrite(str(tmp_path / "src" / ("cat" if i < 3 else "dog") / f"{i}.png"), p)
    src = tmp_path / "src"
    (src / "cat" / "0_copy.png").write_bytes((src / "cat" / "0.png").read_bytes())      # exact, same tag
    cv2.imwrite(str(src / "cat" / "1_small.jpg"), cv2.resize(pics[1], (80, 60)))         # near, same tag
    (src / "dog" / "2_also.png").write_bytes((src / "cat" / "2.png").read_bytes())      # exact, other tag
    cfg = C.IngestConfig(source=str(src), out=str(tmp_path / f"out-{policy}"), max_side=64, rows_per_shard=3,
                         ambiguous=policy)
    meta = ingest.run(cfg)
    stats = json.loads((tmp_path / f"out-{policy}" / "stats.json").read_text())
    assert stats["total"] == 9 and stats["ok"] + sum(stats["failed"].values()) == 9
    if policy == "drop":
        assert stats["failed"] == {"ambiguous": 2, "duplicate": 2} and stats["ok"] == 5
    else:
        assert stats["failed"] == {"duplicate": 3} and stats["ok"] == 6
    assert meta["ok"] == stats["ok"] and sum(meta["per_tag"].values()) == stats["ok"]
    dups = shards.read_table_file(duplicates_file(cfg.out))
    usable = ingest_usable(cfg.out)
    assert len(usable) == stats["ok"] and not set(usable) & set(dups.column("id").to_pylist())
    assert shards.count_rows(cfg.out) == 9  # the shards keep every row; _dedupe is a side table


def ingest_usable(path):
    from inetseg.stages.common import usable_images

    return [r["id"] for r in usable_images(path, "images", ["id"]).iter_rows()]


def test_rerun_redoes_only_unfinished_shards(ray_session, source, tmp_path):
    out = tmp_path / "images"
    cfg = C.IngestConfig(source=str(source), out=str(out), max_side=64, rows_per_shard=3)
    first = ingest.run(cfg)
    before = shards.read_table(cfg.out).sort_by("id")
    n = first["shards"]
    assert n == 6 and first["resumed_shards"] == 0
    # Simulate a run killed after some shards: lose two shards' files and the stage marker,
    # leave a half-written temp file behind. A row's shard is a hash of its id (the path under pytest's tmp folder),
    # so which shards hold rows varies from machine to machine: take two that do.
    written = sorted(p.stem for p in out.glob("part-*.parquet"))
    assert len(written) >= 2
    lost, unfinished = written[0], written[-1]
    (out / "_SUCCESS.json").unlink()
    for name in (lost, unfinished):
        (out / "_shards" / f"{name}.json").unlink()
    (out / f"{unfinished}.parquet").unlink()
    (out / f".{lost}.parquet.tmp-dead").write_bytes(b"PAR1 half")
    again = ingest.run(cfg)
    assert again["resumed_shards"] == n - 2 and not again.get("reused")
    assert not list(out.glob(".*tmp*"))
    after = shards.read_table(cfg.out).sort_by("id")
    assert after.equals(before)
    # Another config: the folder is started afresh, not mixed.
    third = ingest.run(C.IngestConfig(source=str(source), out=str(out), max_side=48, rows_per_shard=3))
    assert third["resumed_shards"] == 0
