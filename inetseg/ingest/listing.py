"""What to ingest: the inputs of a folder-per-tag tree or a URL manifest, and a test folder's pairs."""
from __future__ import annotations

import hashlib
import os

from inetseg import imaging, shards, storage


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
    items: list[dict] = []
    for label, tag in enumerate(classes, start=1):
        for path in storage.list_files(storage.join(source, tag)):
            items.append({"source": path, "tag": tag, "label": label})
    # Mix the tags across shards (deterministically): a folder-ordered table would feed SGD one
    # class at a time, and block-level shuffling cannot undo that.
    items.sort(key=lambda it: row_id(it["source"]))
    return items, classes


def test_items(test_dir: str) -> list[dict]:
    """The image/mask pairs of a test folder (images/ and masks/, same stems); raises if there are none."""
    if not storage.exists(test_dir):
        raise FileNotFoundError(f"test folder not found: {test_dir}")
    img_dir, mask_dir = storage.join(test_dir, "images"), storage.join(test_dir, "masks")
    if not storage.is_dir(img_dir) or not storage.is_dir(mask_dir):
        raise FileNotFoundError(f"test folder {test_dir} needs images/ and masks/ sub-folders")
    mask_files = {os.path.splitext(os.path.basename(p))[0]: p for p in storage.list_files(mask_dir, (".png",))}
    items = []
    for p in storage.list_files(img_dir, imaging.IMAGE_SUFFIXES):
        stem = os.path.splitext(os.path.basename(p))[0]
        if stem in mask_files:
            items.append({"image_path": p, "mask_path": mask_files[stem]})
    if not items:
        raise FileNotFoundError(f"test folder {test_dir} has no image/mask pairs (same file stems)")
    return items
