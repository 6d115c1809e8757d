"""What to ingest: the inputs of a folder-per-tag tree or a URL manifest, and a test folder's pairs."""
from __future__ import annotations

import hashlib
import os

import pyarrow as pa
import pyarrow.compute as pc

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


# The inputs of an ingest as one Arrow table, sorted by id: no Python object per input survives the listing
# (a million inputs as dicts held ~1 KB each on the driver).
LISTING = pa.schema([("id", pa.string()), ("source", pa.string()), ("tag", pa.string()), ("label", pa.int32())])


def listing_table(sources: pa.Array, tags: pa.Array, labels: pa.Array) -> pa.Table:
    """The LISTING table of these inputs (equal-length arrays), in their order (callers sort once, by id)."""
    ids = pa.array([row_id(s) for s in sources.to_pylist()], pa.string())
    return pa.Table.from_arrays([ids, sources.cast(pa.string()), tags.cast(pa.string()), labels.cast(pa.int32())],
                                schema=LISTING)


def list_manifest(path: str, classes: list[str]) -> tuple[pa.Table, list[str]]:
    """(LISTING, classes) from a crawl's manifest; ambiguous rows were already handled by the crawl."""
    t = shards.read_table_file(path)
    tags = t.column("tag").combine_chunks().cast(pa.string())
    classes = classes or sorted(pc.unique(tags).to_pylist())
    keep = pc.is_in(tags, value_set=pa.array(classes, pa.string()))
    t, tags = t.filter(keep), tags.filter(keep)
    if not t.num_rows:
        raise FileNotFoundError(f"manifest {path} has no rows for classes {classes}")
    labels = pc.add(pc.index_in(tags, value_set=pa.array(classes, pa.string())), 1)
    return listing_table(t.column("url").combine_chunks(), tags, labels).sort_by("id"), classes


def list_source(source: str, classes: list[str]) -> tuple[pa.Table, list[str]]:
    """(LISTING {id, source, tag, label} sorted by id, classes) for a folder-per-tag tree or a URL manifest;
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
    parts = []
    for label, tag in enumerate(classes, start=1):
        files = pa.array(storage.list_files(storage.join(source, tag)), pa.string())
        parts.append(listing_table(files, pa.array([tag] * len(files), pa.string()),
                                   pa.array([label] * len(files), pa.int32())))
    # Sorted by id, which mixes the tags across shards (deterministically): a folder-ordered table would feed SGD
    # one class at a time, and block-level shuffling cannot undo that.
    return pa.concat_tables(parts).sort_by("id"), classes


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
