"""The shard plan of an image table: which rows go in which shard, which shards are finished, and the folder's files."""
from __future__ import annotations

import hashlib
import math
import posixpath

import pyarrow.fs as pafs

from inetseg import shards, storage
from inetseg.ingest.listing import row_id

CONFIG_RECORD = "_ingest.json"  # the config fingerprint the folder's shards were made with


def shard_of(rid: str, num_shards: int) -> int:
    """The shard a row belongs to: a function of its id and the shard count only (deterministic)."""
    return int(rid[:15], 16) % num_shards


def plan_shards(items: list[dict], rows_per_shard: int) -> list[dict]:
    """Split the inputs into shards of about rows_per_shard rows; each spec carries a digest of its rows,
    so a re-run recognises a finished shard even after the source gained or lost files elsewhere."""
    n = max(1, math.ceil(len(items) / rows_per_shard))
    groups: list[list[tuple[str, dict]]] = [[] for _ in range(n)]
    for it in items:
        rid = row_id(it["source"])
        groups[shard_of(rid, n)].append((rid, it))
    specs = []
    for k, group in enumerate(groups):
        group.sort(key=lambda p: p[0])
        digest = hashlib.sha1("\n".join(f"{rid}\t{it['tag']}\t{it['label']}" for rid, it in group).encode()).hexdigest()
        specs.append({"shard": k, "name": f"part-{k:05d}", "digest": digest,
                      "sources": [it["source"] for _, it in group], "tags": [it["tag"] for _, it in group],
                      "labels": [int(it["label"]) for _, it in group]})
    return specs


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
    names = {f"{s['name']}.parquet" for s in specs if s["sources"]}
    fs, inner = storage.resolve(out)
    for info in fs.get_file_info(pafs.FileSelector(inner, recursive=False)):
        base = posixpath.basename(info.path)
        if base.startswith("part-") and base.endswith(".parquet") and base not in names:
            fs.delete_file(info.path)
