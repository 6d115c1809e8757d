"""Ingest stage: a folder-per-tag tree or URL manifest -> validated, de-duplicated JPEG image shards (Ray Data)."""
from __future__ import annotations

import hashlib
import logging
import math
import os
import posixpath
import time
import uuid
from collections import Counter

import cv2
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray
from tqdm import tqdm

from inetseg import config as C
from inetseg import dedupe, download, imaging, masks, schema, shards, storage
from inetseg.stages.common import run_stage, write_stage

log = logging.getLogger("inetseg")
IMAGE_SUFFIXES = imaging.IMAGE_SUFFIXES


def row_id(source: str) -> str:
    """Stable id of an input: the same file always gets the same id, across runs and machines."""
    return hashlib.sha1(source.encode("utf-8")).hexdigest()[:20]


def manifest_path(source: str) -> str | None:
    """The URL manifest a source names (a .parquet file, or a crawl folder holding one), else None."""
    if source.endswith(".parquet") and storage.exists(source):
        return source
    candidate = storage.join(source, "manifest.parquet")
    return candidate if storage.exists(candidate) else None


def list_manifest(path: str, classes: list[str]) -> tuple[list[dict], list[str]]:
    """(items, classes) from a crawl's manifest; ambiguous rows were already handled by the crawl."""
    t = shards.read_table_file(path)
    tags = t.column("tag").to_pylist()
    classes = classes or sorted(set(tags))
    index = {c: i for i, c in enumerate(classes, start=1)}
    items = [{"source": u, "tag": tag, "label": index[tag]} for u, tag in zip(t.column("url").to_pylist(), tags)
             if tag in index]
    if not items:
        raise FileNotFoundError(f"manifest {path} has no rows for classes {classes}")
    items.sort(key=lambda it: row_id(it["source"]))
    return items, classes


def list_source(source: str, classes: list[str]) -> tuple[list[dict], list[str]]:
    """(items {source, tag, label}, classes) for a folder-per-tag tree or a URL manifest;
    classes [] = all sub-folders (or tags) sorted."""
    manifest = manifest_path(source)
    if manifest:
        return list_manifest(manifest, classes)
    if not storage.is_dir(source):
        raise FileNotFoundError(f"ingest source folder not found: {source}")
    tags = storage.list_dirs(source)
    if classes:
        missing = [c for c in classes if c not in tags]
        if missing:
            raise FileNotFoundError(f"ingest source {source} has no sub-folder for class(es) {missing}")
    else:
        classes = tags
    if not classes:
        raise FileNotFoundError(f"ingest source {source} has no tag sub-folders")
    items = []
    for label, tag in enumerate(classes, start=1):
        for path in storage.list_files(storage.join(source, tag)):
            items.append({"source": path, "tag": tag, "label": label})
    # Mix the tags across shards (deterministically): a folder-ordered table would feed SGD one
    # class at a time, and block-level shuffling cannot undo that.
    items.sort(key=lambda it: row_id(it["source"]))
    return items, classes


def _is_url(src: str) -> bool:
    return src.startswith(("http://", "https://"))


# ---------------------------------------------------------------- shard plan

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


def _shard_paths(out: str, name: str) -> tuple[str, str]:
    """(data file, stats file) of a shard."""
    return storage.join(out, f"{name}.parquet"), storage.join(out, "_shards", f"{name}.json")


def shard_done(out: str, spec: dict) -> bool:
    """A shard is finished when its stats file (written after the data file's rename) has its digest."""
    data, stats = _shard_paths(out, spec["name"])
    if not storage.exists(stats):
        return False
    try:
        rec = storage.read_json(stats)
    except (OSError, ValueError):
        return False
    return rec.get("digest") == spec["digest"] and (rec.get("total") == 0 or storage.exists(data))


# ---------------------------------------------------------------- one shard (runs in a Ray Data task)

def _process_files(sources: list[str], tags: list, labels: list, limits: imaging.ImageLimits, quality: int,
                   fetcher: download.Fetcher | None = None) -> pa.Table:
    """Read (or download) + transform one batch; a failure becomes a row with its reason, never an exception."""
    rows: dict[str, list] = {n: [] for n in schema.IMAGES.names}
    urls = [s for s in sources if _is_url(s)]
    fetched = dict(zip(urls, (fetcher or download.Fetcher(download.FetchPolicy())).get_many(urls))) if urls else {}
    for src, tag, label in zip(sources, tags, labels):
        status, error, jpeg, h, w, sha, ph = schema.STATUS_OK, "", None, 0, 0, None, None
        try:
            data = fetched[src] if _is_url(src) else storage.read_bytes(src)
            if isinstance(data, imaging.ImageError):
                raise data
            sha = dedupe.content_hash(data)
            img = imaging.prepare(data, limits)
            jpeg, h, w, ph = imaging.encode_jpeg(img, quality), img.shape[0], img.shape[1], dedupe.phash(img)
        except imaging.ImageError as e:
            status, error = e.reason, e.detail
        except (OSError, FileNotFoundError) as e:
            status, error = "unreadable", str(e).splitlines()[0][:200]
        except Exception as e:  # noqa: BLE001 - a codec bug on one file must not kill the run
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
    sources = [str(s) for s in spec["sources"]]
    tags, labels = list(spec["tags"]), [int(v) for v in spec["labels"]]
    data_path, stats_path = _shard_paths(out, name)
    fs, data_inner = storage.resolve(data_path)
    tmp_inner = posixpath.join(posixpath.dirname(data_inner), f".{name}.parquet.tmp-{uuid.uuid4().hex[:8]}")
    fetcher = download.Fetcher(policy)
    statuses: Counter = Counter()
    per_tag: Counter = Counter()
    nbytes = 0
    if sources:
        with fs.open_output_stream(tmp_inner) as sink, pq.ParquetWriter(sink, schema.IMAGES, compression="zstd") as w:
            for i in range(0, len(sources), batch):
                table = _process_files(sources[i:i + batch], tags[i:i + batch], labels[i:i + batch], limits, quality,
                                       fetcher)
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


# ---------------------------------------------------------------- de-duplication (driver)

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
    ids = t.column("id").to_pylist()
    groups = dedupe.find_groups(t.column("sha1").to_pylist(), t.column("phash").to_numpy(),
                                cfg.dedupe_max_distance)
    verdict = dedupe.verdicts(ids, t.column("tag").to_pylist(), groups, cfg.ambiguous)
    keys = sorted(verdict)
    return pa.Table.from_pydict({"id": keys, "status": [verdict[k][0] for k in keys],
                                 "dup_of": [verdict[k][1] for k in keys]}, schema=schema.DUPLICATES)


def duplicate_ids(images: str) -> list[str]:
    """Ids an image table set aside as duplicates/ambiguous (empty for tables without a _dedupe record)."""
    path = storage.join(images, "_dedupe", "part-00000.parquet")
    if not storage.exists(path):
        return []
    return shards.read_table_file(path).column("id").to_pylist()


def totals(out: str, specs: list[dict], dups: pa.Table) -> dict:
    """stats.json: shard stats summed, duplicates moved from ok to their own reasons (ok + failed = total)."""
    total, ok, failed, per_tag, nbytes = 0, 0, Counter(), Counter(), 0
    for spec in specs:
        rec = storage.read_json(_shard_paths(out, spec["name"])[1])
        total += rec["total"]
        ok += rec["ok"]
        failed.update(rec["failed"])
        per_tag.update(rec["per_tag"])
        nbytes += rec.get("image_bytes", 0)
    if dups.num_rows:
        failed.update(dups.column("status").to_pylist())
        ok -= dups.num_rows
        dup_ids = set(dups.column("id").to_pylist())
        fs, _ = storage.resolve(out)
        files = [storage.resolve(storage.join(out, f"{s['name']}.parquet"))[1] for s in specs if s["sources"]]
        tag_of = pads.dataset(files, format="parquet", filesystem=fs).to_table(columns=["id", "tag"])
        for rid, tag in zip(tag_of.column("id").to_pylist(), tag_of.column("tag").to_pylist()):
            if rid in dup_ids:
                per_tag[tag] -= 1
    return {"total": total, "ok": ok, "failed": dict(sorted(failed.items())),
            "per_tag": dict(sorted(per_tag.items())), "shards": len(specs), "image_bytes": nbytes}


# ---------------------------------------------------------------- the stage

def _start(out: str, config_fp: str, resume: bool) -> None:
    """Keep finished shards of an interrupted run with the same config; otherwise start the folder afresh.
    Leftover temp files of killed tasks are removed either way."""
    state = storage.join(out, "_ingest.json")
    same = resume and storage.exists(state) and storage.read_json(state).get("config") == config_fp
    if not same:
        shards.prepare(out)
        storage.write_json(state, {"config": config_fp})
        return
    fs, inner = storage.resolve(out)
    for info in fs.get_file_info(pafs.FileSelector(inner, recursive=False)):
        if ".tmp" in posixpath.basename(info.path):
            fs.delete_file(info.path)
    marker = storage.join(out, shards.SUCCESS)
    if storage.exists(marker):  # finished with other inputs: the marker must not outlive them
        storage.delete_file(marker)


def _remove_stale(out: str, specs: list[dict]) -> None:
    """Delete shard files a previous plan of the same folder made that this plan does not have."""
    names = {f"{s['name']}.parquet" for s in specs if s["sources"]}
    fs, inner = storage.resolve(out)
    for info in fs.get_file_info(pafs.FileSelector(inner, recursive=False)):
        base = posixpath.basename(info.path)
        if base.startswith("part-") and base.endswith(".parquet") and base not in names:
            fs.delete_file(info.path)


def run(cfg: C.IngestConfig, resume: bool = True, progress: bool = True) -> dict:
    """Ingest cfg.source into cfg.out shard by shard (a re-run skips finished shards); returns the stage marker."""
    t0 = time.time()
    items, classes = list_source(cfg.source, list(cfg.classes))
    specs = plan_shards(items, cfg.rows_per_shard)
    config_fp = C.fingerprint(cfg)
    fp = hashlib.sha256((config_fp + "".join(s["digest"] for s in specs)).encode()).hexdigest()[:16]
    if resume and shards.is_complete(cfg.out, fp):
        log.info("ingest: reusing finished output at %s", cfg.out)
        meta = {**shards.read_marker(cfg.out), "reused": True}
        _print_stats(meta)
        return meta
    _start(cfg.out, config_fp, resume)
    pending = [s for s in specs if not shard_done(cfg.out, s)]
    done_rows = sum(len(s["sources"]) for s in specs) - sum(len(s["sources"]) for s in pending)
    if len(pending) < len(specs):
        log.info("ingest: %d of %d shards already finished, %d to go", len(specs) - len(pending), len(specs),
                 len(pending))
    limits = imaging.ImageLimits(cfg.max_side, cfg.min_side, cfg.max_aspect, cfg.max_pixels)
    policy = download.FetchPolicy(timeout=cfg.timeout_seconds, max_bytes=cfg.max_bytes,
                                  retries=cfg.download_retries, threads=cfg.download_threads,
                                  per_host=cfg.per_host_concurrency, allow_private_hosts=cfg.allow_private_hosts)
    storage.makedirs(storage.join(cfg.out, "_shards"))
    if pending:
        ctx = ray.data.DataContext.get_current()
        saved = ctx.enable_progress_bars, ctx.op_resource_reservation_enabled
        # Set before the Dataset is made (it copies the context). One image-level bar instead of Ray
        # Data's per-operator ones; and this dataset has a single operator, so there is nothing
        # downstream to reserve resources for: the reservation would only hold CPUs back.
        ctx.enable_progress_bars, ctx.op_resource_reservation_enabled = False, False
        try:
            ds = ray.data.from_items(pending, override_num_blocks=len(pending))
            ds = ds.map(ingest_shard, num_cpus=1, fn_kwargs={"out": storage.absolute(cfg.out), "limits": limits,
                                                             "quality": cfg.jpeg_quality, "policy": policy,
                                                             "batch": cfg.files_per_task})
            with tqdm(total=len(items), initial=done_rows, desc="ingest", unit="img", disable=not progress) as bar:
                for row in ds.iter_rows():
                    bar.update(int(row["total"]))
        finally:
            ctx.enable_progress_bars, ctx.op_resource_reservation_enabled = saved
    _remove_stale(cfg.out, specs)
    dups = find_duplicates(cfg.out, [s["name"] for s in specs if s["sources"]], cfg)
    shards.write_table(dups, storage.join(cfg.out, "_dedupe"))
    stats = totals(cfg.out, specs, dups)
    storage.write_json(storage.join(cfg.out, "stats.json"), {k: stats[k] for k in ("total", "ok", "failed")})
    meta = shards.mark_complete(cfg.out, fp, {"classes": classes, "seconds": time.time() - t0,
                                              "resumed_shards": len(specs) - len(pending), **stats})
    _print_stats(meta)
    return meta


def _print_stats(meta: dict) -> None:
    """The per-reason table users look at after an ingest."""
    lines = [f"ingest: {meta['ok']}/{meta['total']} images ok"]
    for reason, n in meta.get("failed", {}).items():
        lines.append(f"  {reason:<18} {n}")
    log.info("\n".join(lines))


# ---------------------------------------------------------------- test split

def _process_test(batch: dict) -> pa.Table:
    """Decode a test image + mask pair (kept at full size: metrics are computed there)."""
    rows: dict[str, list] = {n: [] for n in schema.TEST.names}
    for img_path, mask_path in zip(batch["image_path"], batch["mask_path"]):
        img = imaging.decode_rgb(storage.read_bytes(str(img_path)))
        mask = masks.decode_mask(storage.read_bytes(str(mask_path)), str(mask_path))
        if mask.shape != img.shape[:2]:
            raise ValueError(f"test mask {mask_path} is {mask.shape}, image is {img.shape[:2]}")
        rows["id"].append(posixpath.splitext(posixpath.basename(str(img_path)))[0])
        rows["image"].append(imaging.encode_png(img))
        rows["mask"].append(imaging.encode_png(mask))
        rows["height"].append(img.shape[0])
        rows["width"].append(img.shape[1])
    return pa.Table.from_pydict(rows, schema=schema.TEST)


def test_items(test_dir: str) -> list[dict]:
    """The image/mask pairs of a test folder (images/ and masks/, same stems); raises if there are none."""
    if not storage.exists(test_dir):
        raise FileNotFoundError(f"test folder not found: {test_dir}")
    img_dir, mask_dir = storage.join(test_dir, "images"), storage.join(test_dir, "masks")
    if not storage.is_dir(img_dir) or not storage.is_dir(mask_dir):
        raise FileNotFoundError(f"test folder {test_dir} needs images/ and masks/ sub-folders")
    mask_files = {os.path.splitext(os.path.basename(p))[0]: p for p in storage.list_files(mask_dir, (".png",))}
    items = []
    for p in storage.list_files(img_dir, IMAGE_SUFFIXES):
        stem = os.path.splitext(os.path.basename(p))[0]
        if stem in mask_files:
            items.append({"image_path": p, "mask_path": mask_files[stem]})
    if not items:
        raise FileNotFoundError(f"test folder {test_dir} has no image/mask pairs (same file stems)")
    return items


def ingest_test(test_dir: str, out: str, classes: list[str], resume: bool = True) -> dict:
    """A folder with images/ and masks/ (same stems, masks hold class ids) -> the TEST table."""
    items = test_items(test_dir)

    def body() -> dict:
        ds = ray.data.from_items(items, override_num_blocks=max(1, min(32, len(items) // 16)))
        ds = ds.map_batches(_process_test, batch_size=16, batch_format="numpy")
        write_stage(ds, out, schema.TEST, 1000)
        return {"images": len(items), "classes": classes}

    fp = C.fingerprint(C.IngestConfig(source=test_dir, out=out, classes=classes))
    return run_stage("ingest-test", out, fp, resume, body)
