"""The ingest stage under Ray: bad files are counted per reason, never crash, never lose rows."""
import json

import cv2
import numpy as np
import pyarrow.compute as pc
import pytest

from inetseg import config as C
from inetseg import shards
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
