"""De-duplication over finished shards: the DUPLICATES side table and where an IMAGES folder keeps it."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from inetseg import config as C
from inetseg import dedupe, schema, shards, storage

# The side table sits inside the IMAGES folder: the shards keep every row, readers skip these ids.
DUPLICATES_DIR, DUPLICATES_FILE = "_dedupe", "part-00000.parquet"


def duplicates_file(images: str) -> str:
    """The DUPLICATES table of an IMAGES folder (absent for tables ingested without one)."""
    return storage.join(images, DUPLICATES_DIR, DUPLICATES_FILE)


def write_duplicates(images: str, dups: pa.Table) -> str:
    """Store the DUPLICATES table where duplicates_file() finds it (atomically)."""
    return shards.write_table(dups, storage.join(images, DUPLICATES_DIR), DUPLICATES_FILE)


def find_duplicates(out: str, names: list[str], cfg: C.IngestConfig) -> pa.Table:
    """The DUPLICATES table over all finished shards' ok rows (hash columns only are read)."""
    files = [storage.join(out, f"{n}.parquet") for n in names]
    files = [f for f in files if storage.exists(f)]
    if not cfg.dedupe or not files:
        return schema.DUPLICATES.empty_table()
    fs, _ = storage.resolve(out)
    t = pads.dataset([storage.resolve(f)[1] for f in files], format="parquet", filesystem=fs).to_table(
        columns=["id", "tag", "status", "sha1", "phash"], filter=pc.field("status") == schema.STATUS_OK)
    if t.num_rows < 2:
        return schema.DUPLICATES.empty_table()
    groups = dedupe.find_groups(t.column("sha1"), t.column("phash").to_numpy(), cfg.dedupe_max_distance)
    return dedupe.verdicts(t.column("id"), t.column("tag"), groups, cfg.ambiguous).cast(schema.DUPLICATES)


def usable_rows(images: str, columns: list[str]) -> pa.Table:
    """The ok rows of an IMAGES folder minus its duplicates (what stages.common.usable_images streams),
    read on the driver with only `columns` (plus id and status)."""
    t = shards.read_table(images, columns=list(dict.fromkeys(["id", "status", *columns])))
    t = t.filter(pc.equal(t.column("status"), schema.STATUS_OK))
    dup_file = duplicates_file(images)
    if storage.exists(dup_file):
        dups = shards.read_table_file(dup_file).column("id")
        t = t.filter(pc.invert(pc.is_in(t.column("id"), value_set=dups)))
    return t.select(columns)


def usable_ids(images: str) -> list[str]:
    """The ids of usable_rows."""
    return usable_rows(images, ["id"]).column("id").to_pylist()
