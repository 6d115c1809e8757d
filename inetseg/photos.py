"""A user's own photos (one file or a folder tree) and the per-photo files `segment` writes: pure, no Ray."""
from __future__ import annotations

import posixpath
from collections import Counter

from inetseg import storage
from inetseg.imaging import IMAGE_SUFFIXES


def list_photos(images: str, exclude: str = "") -> tuple[list[str], str]:
    """(photo paths, the root their names are relative to): the file itself, or a folder's images, recursively.

    Files under `exclude` (the output folder, when it sits inside the input folder) are left out so a
    re-run does not segment its own overlays.
    """
    if not storage.is_dir(images):
        return [images], posixpath.dirname(storage.resolve(images)[1])
    skip = storage.resolve(exclude)[1].rstrip("/") + "/" if exclude else None
    paths = [p for p in storage.list_files(images, IMAGE_SUFFIXES)
             if not (skip and storage.resolve(p)[1].startswith(skip))]
    return paths, storage.resolve(images)[1]


def output_stems(paths: list[str], root: str) -> list[str]:
    """Each photo's output name: its path below `root` without the suffix ('sub/a' for root/sub/a.jpg).

    Sub-folders are kept so two a.jpg in different folders do not collide; photos that would still
    collide (a.jpg beside a.png) keep their suffix instead ('a.jpg', 'a.png').
    """
    rels = [posixpath.relpath(storage.resolve(p)[1], root) for p in paths]
    stems = [posixpath.splitext(r)[0] for r in rels]
    counts = Counter(stems)
    return [s if counts[s] == 1 else r for s, r in zip(stems, rels)]


def finished_stems(folder: str, suffix: str) -> set[str]:
    """Output names that already have a `suffix` file below `folder` (the names of a resumed run)."""
    root = storage.resolve(folder)[1]
    return {posixpath.relpath(storage.resolve(p)[1], root)[:-len(suffix)]
            for p in storage.list_files(folder, (suffix,))}
