"""Ingest stage: a folder-per-tag tree -> validated, resized JPEG image shards (Ray Data)."""
from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import time
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc
import ray

from inetseg import config as C
from inetseg import download, imaging, schema, shards, storage
from inetseg.stages.common import run_stage, write_stage

log = logging.getLogger("inetseg")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff")


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


def _process_files(batch: dict, limits: imaging.ImageLimits, quality: int,
                   policy: download.FetchPolicy | None = None) -> pa.Table:
    """Read (or download) + transform one batch; a failure becomes a row with its reason, never an exception."""
    rows: dict[str, list] = {n: [] for n in schema.IMAGES.names}
    sources = [str(s) for s in batch["source"]]
    urls = [s for s in sources if _is_url(s)]
    fetched = dict(zip(urls, download.Fetcher(policy or download.FetchPolicy()).get_many(urls))) if urls else {}
    for src, tag, label in zip(sources, batch["tag"], batch["label"]):
        status, error, jpeg, h, w = schema.STATUS_OK, "", None, 0, 0
        try:
            data = fetched[src] if _is_url(src) else storage.read_bytes(src)
            if isinstance(data, imaging.ImageError):
                raise data
            jpeg, h, w = imaging.process(data, limits, quality)
        except imaging.ImageError as e:
            status, error = e.reason, e.detail
        except (OSError, FileNotFoundError) as e:
            status, error = "unreadable", str(e).splitlines()[0][:200]
        except Exception as e:  # noqa: BLE001 - a codec bug on one file must not kill the run
            status, error = "undecodable", f"{type(e).__name__}: {e}"[:200]
        rows["id"].append(row_id(str(src)))
        rows["tag"].append(str(tag))
        rows["label"].append(int(label))
        rows["source"].append(str(src))
        rows["status"].append(status)
        rows["error"].append(error)
        rows["image"].append(jpeg)
        rows["height"].append(h)
        rows["width"].append(w)
    return pa.Table.from_pydict(rows, schema=schema.IMAGES)


def status_counts(path: str) -> dict:
    """{'total', 'ok', 'failed': {reason: n}, 'per_tag': {tag: ok}} from the status column only."""
    t = shards.read_table(path, columns=["tag", "status"])
    statuses = Counter(t.column("status").to_pylist())
    ok_tags = pc.filter(t.column("tag"), pc.equal(t.column("status"), schema.STATUS_OK))
    total = t.num_rows
    ok = statuses.pop(schema.STATUS_OK, 0)
    return {"total": total, "ok": ok, "failed": dict(sorted(statuses.items())),
            "per_tag": dict(sorted(Counter(ok_tags.to_pylist()).items()))}


def run(cfg: C.IngestConfig, resume: bool = True) -> dict:
    """Ingest cfg.source into cfg.out; returns the stage marker (counts, classes, seconds)."""
    items, classes = list_source(cfg.source, list(cfg.classes))
    limits = imaging.ImageLimits(cfg.max_side, cfg.min_side, cfg.max_aspect, cfg.max_pixels)
    policy = download.FetchPolicy(timeout=cfg.timeout_seconds, max_bytes=cfg.max_bytes,
                                  retries=cfg.download_retries, threads=cfg.download_threads,
                                  per_host=cfg.per_host_concurrency, allow_private_hosts=cfg.allow_private_hosts)

    def body() -> dict:
        t0 = time.time()
        ds = ray.data.from_items(items, override_num_blocks=max(1, len(items) // cfg.files_per_task))
        ds = ds.map_batches(_process_files, batch_size=cfg.files_per_task, batch_format="numpy",
                            fn_kwargs={"limits": limits, "quality": cfg.jpeg_quality, "policy": policy})
        write_stage(ds, cfg.out, schema.IMAGES, cfg.rows_per_shard)
        stats = status_counts(cfg.out)
        storage.write_json(storage.join(cfg.out, "stats.json"), stats)
        return {"classes": classes, "seconds": time.time() - t0, **stats}

    meta = run_stage("ingest", cfg.out, C.fingerprint(cfg), resume, body)
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
        mask = imaging.decode_mask(storage.read_bytes(str(mask_path)))
        if mask.shape != img.shape[:2]:
            raise ValueError(f"test mask {mask_path} is {mask.shape}, image is {img.shape[:2]}")
        rows["id"].append(posixpath.splitext(posixpath.basename(str(img_path)))[0])
        rows["image"].append(imaging.encode_png(img))
        rows["mask"].append(imaging.encode_png(mask))
        rows["height"].append(img.shape[0])
        rows["width"].append(img.shape[1])
    return pa.Table.from_pydict(rows, schema=schema.TEST)


def ingest_test(test_dir: str, out: str, classes: list[str], resume: bool = True) -> dict:
    """A folder with images/ and masks/ (same stems, masks hold class ids) -> the TEST table."""
    img_dir, mask_dir = storage.join(test_dir, "images"), storage.join(test_dir, "masks")
    if not storage.is_dir(img_dir) or not storage.is_dir(mask_dir):
        raise FileNotFoundError(f"test folder {test_dir} needs images/ and masks/ sub-folders")
    masks = {os.path.splitext(os.path.basename(p))[0]: p for p in storage.list_files(mask_dir, (".png",))}
    items = []
    for p in storage.list_files(img_dir, IMAGE_SUFFIXES):
        stem = os.path.splitext(os.path.basename(p))[0]
        if stem in masks:
            items.append({"image_path": p, "mask_path": masks[stem]})
    if not items:
        raise FileNotFoundError(f"test folder {test_dir} has no image/mask pairs")

    def body() -> dict:
        ds = ray.data.from_items(items, override_num_blocks=max(1, min(32, len(items) // 16)))
        ds = ds.map_batches(_process_test, batch_size=16, batch_format="numpy")
        write_stage(ds, out, schema.TEST, 1000)
        return {"images": len(items), "classes": classes}

    fp = C.fingerprint(C.IngestConfig(source=test_dir, out=out, classes=classes))
    return run_stage("ingest-test", out, fp, resume, body)
