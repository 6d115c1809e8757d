"""Batch transforms run inside Ray Data (decode + augment), so training loops only see tensors."""
from __future__ import annotations

import hashlib

import cv2
import numpy as np

from inetseg import imaging, masks
from inetseg.schema import IGNORE


def normalise(images: np.ndarray) -> np.ndarray:
    """N x H x W x 3 uint8 -> N x 3 x H x W float32 in [-1, 1] (mean/std 0.5: no borrowed ImageNet stats)."""
    x = images.astype(np.float32).transpose(0, 3, 1, 2)
    return x / 127.5 - 1.0


def to_chw_uint8(images: np.ndarray) -> np.ndarray:
    """N x H x W x 3 uint8 -> N x 3 x H x W uint8: what crosses the object store (4x fewer bytes than float)."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2))


def to_input(x):
    """A uint8 N x 3 x H x W torch tensor -> the network's float input in [-1, 1] (as `normalise`)."""
    return x.float().div_(127.5).sub_(1.0)


def in_holdout(ids, fraction: float) -> np.ndarray:
    """Deterministic split by id hash: the same image is always on the same side."""
    if fraction <= 0:
        return np.zeros(len(ids), dtype=bool)
    cut = int(fraction * 2**32)
    return np.array([int.from_bytes(hashlib.md5(str(i).encode()).digest()[:4], "little") < cut for i in ids])


def _random_crop_box(rng: np.random.Generator, h: int, w: int, scale: tuple[float, float],
                     ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """A random-resized-crop box (y, x, ch, cw), as torchvision's RandomResizedCrop samples it."""
    area = h * w
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
        cw, ch = int(round(np.sqrt(target * aspect))), int(round(np.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
    side = min(h, w)
    return (h - side) // 2, (w - side) // 2, side, side


def augment_images(images: list[np.ndarray], input_size: int, augment: bool,
                   rng: np.random.Generator | None = None) -> np.ndarray:
    """Decoded RGB images -> N x 3 x S x S uint8 (`to_input` makes the float input): random resized crop +
    flip when augmenting, else a resize."""
    rng = rng or np.random.default_rng()
    xs = []
    for img in images:
        if augment:
            y0, x0, ch, cw = _random_crop_box(rng, *img.shape[:2], scale=(0.35, 1.0))
            img = img[y0:y0 + ch, x0:x0 + cw]
            if rng.random() < 0.5:
                img = img[:, ::-1]
        xs.append(imaging.resize_square(np.ascontiguousarray(img), input_size))
    if not xs:
        return np.zeros((0, 3, input_size, input_size), np.uint8)
    return to_chw_uint8(np.stack(xs))


def decode_batch(batch: dict) -> dict:
    """Rows of the IMAGES table -> the same rows with 'image' decoded to H x W x 3 uint8 (for caching:
    an epoch then starts from pixels instead of JPEG)."""
    images = np.empty(len(batch["image"]), dtype=object)
    images[:] = [imaging.decode_rgb(d) for d in batch["image"]]
    return {"id": batch["id"], "label": batch["label"], "image": images}


def _rgb(data) -> np.ndarray:
    """An image cell: JPEG bytes, or pixels already decoded by `decode_batch`."""
    return data if isinstance(data, np.ndarray) else imaging.decode_rgb(data)


def holdout_side(batch: dict, holdout: float, want_holdout: bool) -> dict:
    """The rows of a numpy batch on the requested side of the id-hash holdout split (all columns kept). A separate
    step from classifier_batch: an empty batch of raw rows converts to Arrow, an empty image tensor does not (Ray
    Data then pickles it and warns once per batch)."""
    keep = in_holdout(batch["id"], holdout) == want_holdout
    return {k: v[keep] if isinstance(v, np.ndarray) else [x for x, k_ in zip(v, keep) if k_]
            for k, v in batch.items()}


def classifier_batch(batch: dict, input_size: int, augment: bool) -> dict:
    """Rows of the IMAGES table -> {'x': N x 3 x S x S uint8, 'y': N int64 (0-based class)}."""
    images = [_rgb(d) for d in batch["image"]]
    ys = [int(label) - 1 for label in batch["label"]]
    return {"x": augment_images(images, input_size, augment), "y": np.asarray(ys, dtype=np.int64)}


def segmenter_batch(batch: dict, input_size: int, augment: bool) -> dict:
    """Rows of the PSEUDO table -> {'x': N x 3 x S x S float32, 'mask': N x S x S int64 (255 = ignore)}.

    Image and mask get the same crop and flip; the mask is resized with nearest neighbour.
    """
    rng = np.random.default_rng()
    xs, ms = [], []
    for data, mdata in zip(batch["image"], batch["mask"]):
        img = imaging.decode_rgb(data)
        mask = masks.decode_mask(mdata)
        if augment:
            # Scale jitter then a crop, DeepLab style; padding with 'ignore' keeps the loss honest.
            s = rng.uniform(0.75, 1.25) * input_size / max(img.shape[:2])
            h, w = max(1, int(img.shape[0] * s)), max(1, int(img.shape[1] * s))
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
            mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
            ph, pw = max(0, input_size - h), max(0, input_size - w)
            img = cv2.copyMakeBorder(img, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=(imaging.PAD_VALUE,) * 3)
            mask = cv2.copyMakeBorder(mask, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=IGNORE)
            y0 = int(rng.integers(0, img.shape[0] - input_size + 1))
            x0 = int(rng.integers(0, img.shape[1] - input_size + 1))
            img = img[y0:y0 + input_size, x0:x0 + input_size]
            mask = mask[y0:y0 + input_size, x0:x0 + input_size]
            if rng.random() < 0.5:
                img, mask = img[:, ::-1], mask[:, ::-1]
        else:  # whole, aspect kept and padded: as prediction sees an image
            img, _ = imaging.letterbox(img, input_size)
            mask, _ = imaging.letterbox(mask, input_size, IGNORE, cv2.INTER_NEAREST)
        xs.append(np.ascontiguousarray(img))
        ms.append(np.ascontiguousarray(mask))
    if not xs:
        return {"x": np.zeros((0, 3, input_size, input_size), np.float32),
                "mask": np.zeros((0, input_size, input_size), np.int64)}
    return {"x": normalise(np.stack(xs)), "mask": np.stack(ms).astype(np.int64)}
