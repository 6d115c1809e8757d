"""The ingest steps without Ray: the layer rule, the shard plan, and which shards a re-run keeps."""
import ast
import hashlib
import pathlib

import pyarrow as pa

from inetseg.ingest import plan
from inetseg.ingest.listing import listing_table, row_id

STEPS = pathlib.Path(plan.__file__).parent


def test_ingest_steps_import_neither_ray_nor_mlflow():
    for path in STEPS.glob("*.py"):
        tree = ast.parse(path.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not [m for m in names if m.split(".")[0] in ("ray", "mlflow")], path.name


def test_plan_is_deterministic_and_covers_every_row():
    items = [(f"/src/{t}/{i}.jpg", t, k) for k, t in enumerate(("a", "b"), 1) for i in range(25)]

    def listing(rows):
        return listing_table(*(pa.array(c) for c in zip(*rows)))

    specs = plan.plan_shards(listing(items), 10)
    rows = [plan.spec_rows(sp) for sp in specs]
    assert len(specs) == 5 and sorted(s for r in rows for s in r[0]) == sorted(i[0] for i in items)
    assert all(plan.shard_of(row_id(s), 5) == sp["shard"] for sp, r in zip(specs, rows) for s in r[0])
    assert [sp["rows"] for sp in specs] == [len(r[0]) for r in rows]
    assert all(r[0] == sorted(r[0], key=row_id) for r in rows)  # id order within a shard (the digest's)
    assert [s["digest"] for s in plan.plan_shards(listing(list(reversed(items))), 10)] == [s["digest"] for s in specs]
    # The digest of the former dict-based plan (what finished shards on disk carry): a re-run must still match it.
    group = sorted((row_id(src), tag, label) for src, tag, label in items if plan.shard_of(row_id(src), 5) == 0)
    assert specs[0]["digest"] == hashlib.sha1("\n".join(f"{r}\t{t}\t{lab}" for r, t, lab in group).encode()).hexdigest()


def test_open_folder_keeps_shards_of_the_same_config_only(tmp_path):
    out = tmp_path / "images"
    plan.open_folder(str(out), "cfg-1")
    (out / "part-00000.parquet").write_bytes(b"kept")
    (out / ".part-00001.parquet.tmp-dead").write_bytes(b"half")
    plan.open_folder(str(out), "cfg-1")
    assert (out / "part-00000.parquet").exists() and not list(out.glob(".*tmp*"))
    plan.open_folder(str(out), "cfg-2")
    assert not (out / "part-00000.parquet").exists()
    assert (out / plan.CONFIG_RECORD).exists()
