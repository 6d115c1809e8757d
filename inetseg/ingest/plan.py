"""The shard plan of an image table: which rows go in which shard, which shards are finished, and the folder's files."""
from __future__ import annotations

import hashlib
import math
import posixpath

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from inetseg import shards, storage

CONFIG_RECORD = "_ingest.json"  # the config fingerprint the folder's shards were made with


def shard_of(rid: str, num_shards: int) -> int:
    """The shard a row belongs to: a function of its id and the shard count only (deterministic)."""
    return int(rid[:15], 16) % num_shards


def plan_shards(listing: pa.Table, rows_per_shard: int) -> list[dict]:
    """Split a LISTING table into shards of about rows_per_shard rows; each spec carries a digest of its rows,
    so a re-run recognises a finished shard even after the source gained or lost files elsewhere. A spec holds
    its rows as one Arrow IPC buffer (`spec_rows` reads it): a million inputs are not a million Python objects."""
    n = max(1, math.ceil(listing.num_rows / rows_per_shard))
    listing = listing.sort_by("id")
    shard = np.fromiter((shard_of(rid, n) for rid in listing.column("id").to_pylist()), np.int64,
                        count=listing.num_rows)
    # A stable sort by shard keeps each shard's rows in id order (the digest's order).
    grouped = listing.take(pa.array(np.argsort(shard, kind="stable")))
    counts = np.bincount(shard, minlength=n)
    specs, start = [], 0
    for k in range(n):
        part = grouped.slice(start, int(counts[k]))
        start += int(counts[k])
        lines = pc.binary_join_element_wise(part.column("id"), part.column("tag"),
                                            pc.cast(part.column("label"), pa.string()), "\t")
        digest = hashlib.sha1("\n".join(lines.to_pylist()).encode()).hexdigest()
        specs.append({"shard": k, "name": f"part-{k:05d}", "digest": digest, "rows": int(counts[k]),
                      "inputs": _pack(part.select(["source", "tag", "label"]))})
    return specs


def _pack(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def spec_rows(spec: dict) -> tuple[list[str], list[str], list[int]]:
    """(sources, tags, labels) of one shard spec, in id order."""
    t = pa.ipc.open_stream(pa.py_buffer(spec["inputs"])).read_all()
    return t.column("source").to_pylist(), t.column("tag").to_pylist(), t.column("label").to_pylist()


def shard_paths(out: str, name: str) -> tuple[str, str]:
    """(data file, stats file) of a shard."""
    return storage.join(out, f"{name}.parquet"), storage.join(out, "_shards", f"{name}.json")


def shard_done(out: str, spec: dict) -> bool:
    """A shard is finished when its stats file (written after the data file's rename) has its digest."""
    data, stats = shard_paths(out, spec["name"])
    if not storage.exists(stats):
        return False
    try:
        rec = storage.read_json(stats)
    except (OSError, ValueError):
        return False
    return rec.get("digest") == spec["digest"] and (rec.get("total") == 0 or storage.exists(data))


def open_folder(out: str, config_fp: str) -> None:
    """Keep the finished shards another run of the same config left in `out`; start the folder afresh when a
    different config (or nothing we know) made it, since its shards would mix two settings in one table.
    Leftover temp files of killed tasks are removed either way."""
    record = storage.join(out, CONFIG_RECORD)
    if not (storage.exists(record) and storage.read_json(record).get("config") == config_fp):
        shards.prepare(out)
        storage.write_json(record, {"config": config_fp})
        return
    fs, inner = storage.resolve(out)
    for info in fs.get_file_info(pafs.FileSelector(inner, recursive=False)):
        if ".tmp" in posixpath.basename(info.path):
            fs.delete_file(info.path)


def remove_stale(out: str, specs: list[dict]) -> None:
    """Delete shard files a previous plan of the same folder made that this plan does not have."""
    names = {f"{s['name']}.parquet" for s in specs if s["rows"]}
    fs, inner = storage.resolve(out)
    for info in fs.get_file_info(pafs.FileSelector(inner, recursive=False)):
        base = posixpath.basename(info.path)
        if base.startswith("part-") and base.endswith(".parquet") and base not in names:
            fs.delete_file(info.path)
