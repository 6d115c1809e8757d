"""A labelled folder-per-tag photo collection laid out as the pipeline's training tree and a held-out
test folder, by a hash of each file name (pure file work, no Ray).

Input layout (e.g. ../shared/data/real-dev): `images/<tag>/<name>.<ext>`, `masks/<stem>.png` for some
photos (class ids in `classes.json` order, 0 background, 255 ignore), `classes.json`.
Output: `train/<tag>/...` (every photo not held out, masked or not: the pipeline reads only the tag),
`test/images/`, `test/masks/`, `test/classes.json` (the form `PipelineConfig.test` reads), and
`split.json` naming every file, so a run can be audited and reproduced.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field

from inetseg import evalsets
from inetseg.imaging import IMAGE_SUFFIXES


def split_key(name: str, salt: str = "") -> float:
    """A stable number in [0, 1) from a file name: the same photo always falls on the same side."""
    digest = hashlib.sha1((salt + name).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


@dataclass
class Split:
    """Which photo goes where; paths are absolute source paths."""

    classes: list[str]
    train: dict[str, list[str]] = field(default_factory=dict)  # tag -> photos to train on (tags only)
    test: list[tuple[str, str, str]] = field(default_factory=list)  # (tag, photo, mask) held out
    train_masks: dict[str, str] = field(default_factory=dict)  # photo -> mask, for measuring pseudo labels only
    distractors: dict[str, list[str]] = field(default_factory=dict)  # tag -> off-topic photos added as noise


def _read_classes(source: str) -> list[str]:
    """classes.json's names (the mask ids' order), else the tag folders sorted."""
    path = os.path.join(source, "classes.json")
    if os.path.exists(path):
        return evalsets.parse_classes(path)
    return sorted(d for d in os.listdir(os.path.join(source, "images"))
                  if os.path.isdir(os.path.join(source, "images", d)))


def _photos(folder: str) -> list[str]:
    return sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.lower().endswith(IMAGE_SUFFIXES))


def plan_split(source: str, test_fraction: float = 0.2, distractors: str = "", distractors_per_tag: int = 0,
               salt: str = "") -> Split:
    """Hold out `test_fraction` of each tag's masked photos (by file-name hash); add distractors per tag."""
    img_root, mask_root = os.path.join(source, "images"), os.path.join(source, "masks")
    if not os.path.isdir(img_root):
        raise FileNotFoundError(f"{source} has no images/<tag>/ folders")
    split = Split(classes=_read_classes(source))
    for tag in split.classes:
        folder = os.path.join(img_root, tag)
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{source}: no images/{tag}/ for class '{tag}'")
        split.train[tag] = []
        for photo in _photos(folder):
            stem = os.path.splitext(os.path.basename(photo))[0]
            mask = os.path.join(mask_root, stem + ".png")
            if os.path.exists(mask) and split_key(os.path.basename(photo), salt) < test_fraction:
                split.test.append((tag, photo, mask))
            else:
                split.train[tag].append(photo)
                if os.path.exists(mask):
                    split.train_masks[photo] = mask
    if distractors and distractors_per_tag > 0:
        pool = sorted(_photos(distractors), key=lambda p: split_key(os.path.basename(p), "distractor" + salt))
        need = distractors_per_tag * len(split.classes)
        if len(pool) < need:
            raise FileNotFoundError(f"{distractors} holds {len(pool)} photos, {need} needed")
        for i, tag in enumerate(split.classes):  # each distractor goes to exactly one tag
            split.distractors[tag] = pool[i * distractors_per_tag:(i + 1) * distractors_per_tag]
    return split


def _link(src: str, dst: str) -> None:
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if os.path.lexists(dst):
        os.remove(dst)
    os.symlink(os.path.abspath(src), dst)


def layout(split: Split, out: str) -> dict[str, str]:
    """Symlink the split into out/train and out/test; write out/split.json. Returns the two folders."""
    train, test = os.path.join(out, "train"), os.path.join(out, "test")
    for tag, photos in split.train.items():
        for p in photos:
            _link(p, os.path.join(train, tag, os.path.basename(p)))
        for p in split.distractors.get(tag, []):
            _link(p, os.path.join(train, tag, "distractor_" + os.path.basename(p)))
    for _, photo, mask in split.test:
        _link(photo, os.path.join(test, "images", os.path.basename(photo)))
        _link(mask, os.path.join(test, "masks", os.path.basename(mask)))
    os.makedirs(test, exist_ok=True)
    with open(os.path.join(test, "classes.json"), "w") as f:
        json.dump(split.classes, f)
    record = {"classes": split.classes, "train": split.train, "test": split.test,
              "distractors": split.distractors, "train_masks": split.train_masks}
    with open(os.path.join(out, "split.json"), "w") as f:
        json.dump(record, f, indent=1)
    return {"train": train, "test": test}


def distractor_path(train: str, tag: str, photo: str) -> str:
    """Where layout() put a distractor in the training tree (the path ingest lists, so its row id)."""
    return os.path.join(train, tag, "distractor_" + os.path.basename(photo))
