"""Stage output folders of Parquet shards: completion markers, resumability, small-table I/O."""
from __future__ import annotations

import time
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from inetseg import storage

SUCCESS = "_SUCCESS.json"  # written last: a folder without it is partial and is never read


def is_complete(path: str, fingerprint: str | None = None) -> bool:
    """True if `path` holds a finished stage output (made with `fingerprint`, when given)."""
    marker = storage.join(path, SUCCESS)
    if not storage.exists(marker):
        return False
    if fingerprint is None:
        return True
    try:
        return storage.read_json(marker).get("fingerprint") == fingerprint
    except (OSError, ValueError):
        return False


def read_marker(path: str) -> dict:
    """The metadata a finished stage left in its marker."""
    return storage.read_json(storage.join(path, SUCCESS))


def prepare(path: str) -> None:
    """Start a stage output afresh: drop any partial or stale content, create the folder."""
    storage.delete_dir(path)
    storage.makedirs(path)


def mark_complete(path: str, fingerprint: str, meta: dict[str, Any]) -> dict:
    """Write the completion marker (last step of every stage)."""
    record = {"fingerprint": fingerprint, "finished_at": time.time(), **meta}
    storage.write_json(storage.join(path, SUCCESS), record)
    return record


def require(path: str, what: str) -> None:
    """Raise FileNotFoundError naming the missing input when `path` is not a finished output."""
    if not storage.exists(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    if not is_complete(path):
        raise FileNotFoundError(f"{what} at {path} is incomplete (no {SUCCESS}); re-run the stage that makes it")


def parquet_files(path: str) -> list[str]:
    """The data files of a stage output, sorted: hidden (.x) and side (_x) files and folders left out."""
    root = storage.resolve(path)[1].rstrip("/")
    out = []
    for p in storage.list_files(path, suffixes=(".parquet",)):
        inner = p.split("://", 1)[-1] if storage.is_uri(p) else p
        rel = "/" + inner[len(root):].lstrip("/")
        if "/." in rel or "/_" in rel or ".tmp" in rel:
            continue
        out.append(p)
    return out


def read_table(path: str, columns: list[str] | None = None, schema: pa.Schema | None = None) -> pa.Table:
    """Read a (small) stage output into one table on the driver, e.g. scores or status columns."""
    files = parquet_files(path)
    if not files:
        if schema is not None:
            return schema.empty_table() if columns is None else schema.empty_table().select(columns)
        raise FileNotFoundError(f"no Parquet files in {path}")
    fs, _ = storage.resolve(path)
    inner = [storage.resolve(f)[1] for f in files]
    ds = pads.dataset(inner, format="parquet", filesystem=fs, schema=schema)
    return ds.to_table(columns=columns)


def read_table_file(path: str) -> pa.Table:
    """One Parquet file (local or URI) as a table."""
    fs, inner = storage.resolve(path)
    return pq.read_table(inner, filesystem=fs)


def write_table(table: pa.Table, path: str, name: str = "part-00000.parquet") -> str:
    """Write one small table into a stage folder (driver side), atomically."""
    storage.makedirs(path)
    target = storage.join(path, name)
    fs, inner = storage.resolve(target)
    tmp = inner + ".tmp"
    pq.write_table(table, tmp, filesystem=fs, compression="zstd")
    fs.move(tmp, inner)
    return target


def count_rows(path: str) -> int:
    """Number of rows across a stage output's Parquet files, from the footers only."""
    fs, _ = storage.resolve(path)
    total = 0
    for f in parquet_files(path):
        with fs.open_input_file(storage.resolve(f)[1]) as fh:
            total += pq.ParquetFile(fh).metadata.num_rows
    return total
