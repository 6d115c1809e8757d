"""The ablation's picture: what each row's pseudo labels and trained segmenter look like on the same images.

Top block, training images with a hidden (or masked) truth: the image, each attention row's attention map,
the pseudo label of the last attention row, the truth. Bottom block, test images: the image, each row's
prediction, the ground truth.
"""
from __future__ import annotations

import numpy as np

from inetseg import imaging, masks, shards, viz


def _rows_by_id(path: str, columns: list[str], ids: set[str]) -> dict[str, dict]:
    t = shards.read_table(path, columns=["id", *columns])
    return {i: dict(zip(columns, vals)) for i, *vals in zip(*(t.column(c).to_pylist() for c in ["id", *columns]))
            if i in ids}


def _first_ids(path: str, n: int, wanted: dict | None = None) -> list[str]:
    ids = shards.read_table(path, columns=["id"]).column("id").to_pylist()
    return [i for i in ids if wanted is None or i in wanted][:n]


def pseudo_grid(pseudo: dict[str, str], truth: dict[str, dict], n: int) -> np.ndarray:
    """pseudo: attention row -> its pseudo-label table; truth: id -> {'mask'} (masked training images)."""
    first = next(iter(pseudo.values()))
    ids = _first_ids(first, n, truth)
    images = _rows_by_id(first, ["image"], set(ids))
    per_row = {name: _rows_by_id(path, ["attention", "mask"], set(ids)) for name, path in pseudo.items()}
    last = list(pseudo)[-1]
    cells = []
    for i in ids:
        row = [imaging.decode_rgb(images[i]["image"])]
        row += [viz.heatmap(masks.decode_mask(per_row[name][i]["attention"]).astype(np.float32) / 255)
                for name in pseudo]
        row += [viz.colorize(masks.decode_mask(per_row[last][i]["mask"])),
                viz.colorize(masks.decode_mask(truth[i]["mask"]))]
        cells.append(row)
    return viz.grid(cells, [t[:14] for t in ["image", *pseudo, "pseudo label", "truth"]])


def prediction_grid(predictions: dict[str, str], n: int) -> np.ndarray:
    """predictions: row -> the predictions table it scored (test images, in the same order for every row)."""
    first = next(iter(predictions.values()))
    ids = _first_ids(first, n)
    test = _rows_by_id(first, ["image", "gt"], set(ids))
    per_row = {name: _rows_by_id(path, ["pred"], set(ids)) for name, path in predictions.items()}
    cells = []
    for i in ids:
        row = [imaging.decode_rgb(test[i]["image"])]
        row += [viz.colorize(masks.decode_mask(per_row[name][i]["pred"])) for name in predictions]
        gt = test[i]["gt"]
        row.append(viz.colorize(masks.decode_mask(gt)) if gt is not None else np.zeros_like(row[0]))
        cells.append(row)
    return viz.grid(cells, [t[:14] for t in ["test image", *predictions, "ground truth"]])


def picture(pseudo: dict[str, str], truth: dict[str, dict], predictions: dict[str, str], n: int) -> bytes:
    """Both blocks (either may be empty) stacked into one PNG."""
    blocks = []
    if pseudo and truth:
        blocks.append(pseudo_grid(pseudo, truth, n))
    if predictions:
        blocks.append(prediction_grid(predictions, n))
    if not blocks:
        return viz.encode_png(np.full((8, 8, 3), 255, np.uint8))
    width = max(b.shape[1] for b in blocks)
    padded = [np.pad(b, ((0, 8), (0, width - b.shape[1]), (0, 0)), constant_values=255) for b in blocks]
    return viz.encode_png(np.concatenate(padded))
