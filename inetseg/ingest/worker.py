"""One shard of the ingest: fetch or read, decode, validate, re-encode, write atomically (runs in a Ray Data task)."""
from __future__ import annotations

import contextlib
import posixpath
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import cv2
import pyarrow as pa
import pyarrow.parquet as pq

from inetseg import dedupe, download, imaging, schema, storage
from inetseg.ingest.listing import row_id
from inetseg.ingest.plan import shard_paths, spec_rows


def _is_url(src: str) -> bool:
    return src.startswith(("http://", "https://"))


def process_files(sources: list[str], tags: list, labels: list, limits: imaging.ImageLimits, quality: int,
                  bodies: Iterator[bytes | imaging.ImageError]) -> pa.Table:
    """Read (or take the download of) + transform one batch; a failure becomes a row with its reason, never an
    exception. bodies: the URL sources' downloads in order (Fetcher.iter_many over the shard, already running),
    one taken per URL source as its turn comes, so the downloads go on while earlier images decode."""
    rows: dict[str, list] = {n: [] for n in schema.IMAGES.names}
    for src, tag, label in zip(sources, tags, labels):
        status, error, jpeg, h, w, sha, ph = schema.STATUS_OK, "", None, 0, 0, None, None
        body = next(bodies) if _is_url(src) else None  # outside the try: a missing body is a bug, not a bad image
        try:
            data = body if body is not None else storage.read_bytes(src)
            if isinstance(data, imaging.ImageError):
                raise data
            sha = dedupe.content_hash(data)
            img = imaging.prepare(data, limits)
            jpeg, h, w, ph = imaging.encode_jpeg(img, quality), img.shape[0], img.shape[1], dedupe.phash(img)
        except imaging.ImageError as e:
            status, error = e.reason, e.detail
        except (OSError, FileNotFoundError) as e:
            status, error = "unreadable", str(e).splitlines()[0][:200]
        except Exception as e:  # a codec bug on one file must not kill the run
            status, error = "undecodable", f"{type(e).__name__}: {e}"[:200]
        for key, value in (("id", row_id(src)), ("tag", str(tag)), ("label", int(label)), ("source", src),
                           ("status", status), ("error", error), ("image", jpeg), ("height", h), ("width", w),
                           ("sha1", sha), ("phash", ph)):
            rows[key].append(value)
    return pa.Table.from_pydict(rows, schema=schema.IMAGES)


def ingest_shard(spec: dict, out: str, limits: imaging.ImageLimits, quality: int, policy: download.FetchPolicy,
                 batch: int) -> dict:
    """Fetch + decode one shard's inputs batch by batch into a hidden temp file, rename it into place,
    then write the shard's stats (its completion record). Memory is one batch, whatever the shard size."""
    t0 = time.time()
    cv2.setNumThreads(1)  # one Ray CPU per shard task: OpenCV's own thread pool would oversubscribe the node
    name = str(spec["name"])
    sources, tags, labels = spec_rows(spec)
    data_path, stats_path = shard_paths(out, name)
    fs, data_inner = storage.resolve(data_path)
    tmp_inner = posixpath.join(posixpath.dirname(data_inner), f".{name}.parquet.tmp-{uuid.uuid4().hex[:8]}")
    # Downloads run ahead of decoding by up to two batches (the fetch threads wait on the network while this
    # process decodes; fetching a batch, then decoding it, left the CPU idle during every fetch).
    bodies = download.Fetcher(policy).iter_many((s for s in sources if _is_url(s)), window=2 * batch)
    statuses: Counter = Counter()
    per_tag: Counter = Counter()
    nbytes = 0
    if sources:  # closing(): a failed write stops the downloads still queued
        with contextlib.closing(bodies), fs.open_output_stream(tmp_inner) as sink, \
                pq.ParquetWriter(sink, schema.IMAGES, compression="zstd") as w:
            for i in range(0, len(sources), batch):
                table = process_files(sources[i:i + batch], tags[i:i + batch], labels[i:i + batch], limits, quality,
                                      bodies)
                w.write_table(table)
                st = table.column("status").to_pylist()
                statuses.update(st)
                per_tag.update(t for t, s in zip(table.column("tag").to_pylist(), st) if s == schema.STATUS_OK)
                nbytes += table.column("image").nbytes
        fs.move(tmp_inner, data_inner)  # atomic on a local or POSIX filesystem; object stores upload whole
    ok = statuses.pop(schema.STATUS_OK, 0)
    rec = {"shard": int(spec["shard"]), "digest": str(spec["digest"]), "total": len(sources), "ok": ok,
           "failed": dict(sorted(statuses.items())), "per_tag": dict(sorted(per_tag.items())),
           "image_bytes": int(nbytes), "seconds": round(time.time() - t0, 3)}
    storage.write_json(stats_path, rec)
    return {"name": name, "total": len(sources), "ok": ok}
