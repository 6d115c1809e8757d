"""Ingest totals: shard stats summed with duplicates moved to their own reasons, and the per-reason table."""
from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from inetseg import storage
from inetseg.ingest.plan import shard_paths


def totals(out: str, specs: list[dict], dups: pa.Table) -> dict:
    """stats.json: shard stats summed, duplicates moved from ok to their own reasons (ok + failed = total)."""
    total, ok, nbytes = 0, 0, 0
    failed: Counter[str] = Counter()
    per_tag: Counter[str] = Counter()
    for spec in specs:
        rec = storage.read_json(shard_paths(out, spec["name"])[1])
        total += rec["total"]
        ok += rec["ok"]
        failed.update(rec["failed"])
        per_tag.update(rec["per_tag"])
        nbytes += rec.get("image_bytes", 0)
    if dups.num_rows:
        failed.update(dups.column("status").to_pylist())
        ok -= dups.num_rows
        fs, _ = storage.resolve(out)
        files = [storage.resolve(shard_paths(out, s["name"])[0])[1] for s in specs if s["rows"]]
        tag_of = pads.dataset(files, format="parquet", filesystem=fs).to_table(columns=["id", "tag"])
        gone = pc.filter(tag_of.column("tag"), pc.is_in(tag_of.column("id"), value_set=dups.column("id")))
        for v in pc.value_counts(gone).to_pylist():  # per tag, in Arrow: no Python string per image
            per_tag[v["values"]] -= v["counts"]
    return {"total": total, "ok": ok, "failed": dict(sorted(failed.items())),
            "per_tag": dict(sorted(per_tag.items())), "shards": len(specs), "image_bytes": nbytes}


def stats_table(meta: dict) -> str:
    """The per-reason table users look at after an ingest."""
    lines = [f"ingest: {meta['ok']}/{meta['total']} images ok"]
    for reason, n in meta.get("failed", {}).items():
        lines.append(f"  {reason:<18} {n}")
    return "\n".join(lines)
