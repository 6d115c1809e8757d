"""Evaluation data sets: mask folders and the PASCAL VOC layout, and the map of their ids to a run's (pure).

A stem is a file's path relative to its folder without the extension, so sub-folders keep names apart.
Class lists name the classes without background: ids 1..K in order, 0 is background, 255 is void.
"""
from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass

import numpy as np

from inetseg import masks, metrics, storage

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")  # ids 1..20; 0 = background, 255 = void border
MASK_SUFFIXES = (".png",)  # lossless only: a JPEG mask holds ids that were never drawn
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
OTHERS = ("background", "ignore")
VOID = 255


class DataSetError(ValueError):
    """An evaluation data set or prediction folder does not fit; the CLI prints it as one line."""


@dataclass(frozen=True)
class Item:
    """One scored image: its stem, the photo (None when absent) and the ground-truth mask."""

    stem: str
    image: str | None
    mask: str


@dataclass(frozen=True)
class EvalSet:
    """Items plus the 256-entry uint8 table mapping data-set ids to run ids (scoring is lut[gt])."""

    items: list[Item]
    lut: np.ndarray
    classes: list[str]  # the data set's classes (ids 1..len), background excluded


def files_by_stem(folder: str, suffixes: tuple[str, ...]) -> dict[str, str]:
    """{stem: path} of the files below `folder` (recursively) with one of `suffixes`."""
    root = storage.resolve(folder)[1].rstrip("/")
    out = {}
    for path in storage.list_files(folder, suffixes):
        inner = path.split("://", 1)[1] if storage.is_uri(path) else path
        out[posixpath.splitext(inner[len(root) + 1:])[0]] = path
    return out


def folder_items(folder: str) -> list[Item]:
    """Items of `folder`/masks (with `folder`/images when present) or of a folder of masks only."""
    mask_dir, image_dir = storage.join(folder, "masks"), storage.join(folder, "images")
    if not storage.is_dir(mask_dir):
        if storage.is_dir(image_dir):
            raise DataSetError(f"{folder} has images/ but no masks/ beside it")
        return [Item(stem, None, path) for stem, path in files_by_stem(folder, MASK_SUFFIXES).items()]
    images = files_by_stem(image_dir, IMAGE_SUFFIXES) if storage.is_dir(image_dir) else {}
    return [Item(stem, images.get(stem), path) for stem, path in files_by_stem(mask_dir, MASK_SUFFIXES).items()]


def voc_root(path: str) -> str | None:
    """The VOC20xx folder for a VOCdevkit, VOCdevkit/VOC2012 or VOC2012 path; None if not VOC."""
    candidates = [path, *(storage.join(path, d) for d in storage.list_dirs(path) if d.startswith("VOC"))]
    found = [c for c in candidates if storage.is_dir(storage.join(c, "ImageSets", "Segmentation"))]
    if len(found) > 1:
        raise DataSetError(f"{path} holds several VOC trees ({', '.join(found)}): give one of them")
    return found[0] if found else None


def voc_items(root: str, split: str = "val") -> list[Item]:
    """The items of ImageSets/Segmentation/<split>.txt in a VOC20xx folder."""
    split_file = storage.join(root, "ImageSets", "Segmentation", f"{split}.txt")
    if not storage.exists(split_file):
        have = [posixpath.splitext(posixpath.basename(p))[0]
                for p in storage.list_files(storage.join(root, "ImageSets", "Segmentation"), (".txt",))]
        raise DataSetError(f"VOC split file {split_file} not found (splits here: {', '.join(have) or 'none'})")
    stems = [s.strip() for s in storage.read_text(split_file).splitlines() if s.strip()]
    gt = files_by_stem(storage.join(root, "SegmentationClass"), MASK_SUFFIXES)
    lacking = [s for s in stems if s not in gt]
    if lacking:
        raise DataSetError(f"{len(lacking)} of {len(stems)} stems of {split_file} have no "
                           f"SegmentationClass/<stem>.png (first: {lacking[0]})")
    images = files_by_stem(storage.join(root, "JPEGImages"), (".jpg",))
    return [Item(s, images.get(s), gt[s]) for s in stems]


def read_classes(folder: str) -> list[str] | None:
    """Class names from classes.json in `folder` or its parent: a list, or {"classes": [...]}; else None."""
    folder = storage.absolute(folder).rstrip("/")
    for where in (folder, posixpath.dirname(folder)):
        path = storage.join(where, "classes.json")
        if storage.exists(path):
            return parse_classes(path)
    return None


def parse_classes(path: str) -> list[str]:
    """The class list of one classes.json (a leading 'background' is dropped: ids start at 1)."""
    try:
        data = json.loads(storage.read_text(path))
    except ValueError as e:
        raise DataSetError(f"{path} is not valid JSON: {e}") from None
    names = data.get("classes") if isinstance(data, dict) else data
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise DataSetError(f"{path} must hold a list of class names or {{\"classes\": [...]}}")
    return names[1:] if names[0] == "background" else names


def run_classes(pred: str, given: list[str]) -> list[str]:
    """The run's classes (pred ids 1..K): `given` (classes=...) or classes.json beside the predictions."""
    found = read_classes(pred)
    if given and found and list(given) != found:
        raise DataSetError(f"classes={','.join(given)} disagrees with the classes.json of {pred} ({','.join(found)})")
    if not (given or found):
        raise DataSetError(f"no classes.json in {pred} or its parent folder: name the run's classes with classes=a,b,c")
    return list(given or found or [])


def class_lut(run_classes: list[str], data_classes: list[str], others: str = "background") -> np.ndarray:
    """256 uint8 table: data-set id -> run id (0 background, 1..K the run's classes, 255 not scored).

    Data-set classes the run does not have go to background (others='background') or are not scored
    (others='ignore'); ids beyond the data set's classes map to 255.
    """
    if others not in OTHERS:
        raise DataSetError(f"others must be background or ignore, got {others!r}")
    lacking = [c for c in run_classes if c not in data_classes]
    if lacking:
        raise DataSetError(f"run class {lacking[0]!r} is not a class of the data set "
                           f"({', '.join(data_classes)})")
    lut = np.full(256, VOID, np.uint8)
    lut[0] = 0
    other = 0 if others == "background" else VOID
    for data_id, name in enumerate(data_classes, start=1):
        lut[data_id] = run_classes.index(name) + 1 if name in run_classes else other
    return lut


def open_set(gt: str, run_classes: list[str], split: str = "val", others: str = "background",
             data_classes: list[str] | None = None) -> EvalSet:
    """A VOC tree or mask folder as items + id table; folder classes from `data_classes`, classes.json, or the run's."""
    if not storage.exists(gt):
        raise FileNotFoundError(f"ground truth not found: {gt}")
    root = voc_root(gt)
    if root:
        items, data_classes = voc_items(root, split), list(VOC_CLASSES)
    else:
        items = folder_items(gt)
        mask_dir = storage.join(gt, "masks")
        data_classes = (data_classes or read_classes(mask_dir if storage.is_dir(mask_dir) else gt)
                        or list(run_classes))
    if not items:
        raise DataSetError(f"no ground-truth masks (*.png) under {gt}")
    return EvalSet(items, class_lut(run_classes, data_classes, others), data_classes)


def match(items: list[Item], preds: dict[str, str], allow_missing: bool = False) -> tuple[list[tuple[Item, str]], int]:
    """(item, prediction path) pairs by stem, and how many items lack a prediction (an error unless allowed)."""
    pairs = [(it, preds[it.stem]) for it in items if it.stem in preds]
    lacking = [it.stem for it in items if it.stem not in preds]
    if lacking and not allow_missing:
        raise DataSetError(f"{len(lacking)} of {len(items)} ground-truth masks have no prediction (first: "
                           f"{lacking[0]}); allow_missing=true scores only the matched ones")
    if not pairs:
        raise DataSetError("no prediction matches a ground-truth mask by stem")
    return pairs, len(lacking)


def pair_confusion(gt_path: str, pred_path: str, lut: np.ndarray, num_data_ids: int, num_classes: int) -> np.ndarray:
    """C x (C+1) confusion of one predicted mask against its ground truth (data-set ids mapped by `lut`)."""
    gt = masks.decode_mask(storage.read_bytes(gt_path), gt_path)
    pred = masks.decode_mask(storage.read_bytes(pred_path), pred_path)
    if gt.shape != pred.shape:
        raise DataSetError(f"prediction {pred_path} is {pred.shape[1]}x{pred.shape[0]} (WxH) but its "
                           f"ground truth {gt_path} is {gt.shape[1]}x{gt.shape[0]}")
    stray = gt[(gt >= num_data_ids) & (gt != VOID)]
    if stray.size:
        raise DataSetError(f"ground truth {gt_path} holds id {int(stray[0])}, beyond the data set's "
                           f"{num_data_ids - 1} classes (and 255 = void)")
    return metrics.confusion_matrix(lut[gt], pred, num_classes, ignore=VOID)
