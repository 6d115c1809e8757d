"""The ingest steps without Ray: the layer rule, the shard plan, and which shards a re-run keeps."""
import ast
import pathlib

from inetseg.ingest import plan
from inetseg.ingest.listing import row_id

STEPS = pathlib.Path(plan.__file__).parent


def test_ingest_steps_import_neither_ray_nor_mlflow():
    for path in STEPS.glob("*.py"):
        tree = ast.parse(path.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not [m for m in names if m.split(".")[0] in ("ray", "mlflow")], path.name


def test_plan_is_deterministic_and_covers_every_row():
    items = [{"source": f"/src/{t}/{i}.jpg", "tag": t, "label": k} for k, t in enumerate(("a", "b"), 1)
             for i in range(25)]
    specs = plan.plan_shards(items, 10)
    assert len(specs) == 5 and sorted(s for sp in specs for s in sp["sources"]) == sorted(i["source"] for i in items)
    assert all(plan.shard_of(row_id(s), 5) == sp["shard"] for sp in specs for s in sp["sources"])
    assert [s["digest"] for s in plan.plan_shards(list(reversed(items)), 10)] == [s["digest"] for s in specs]


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
