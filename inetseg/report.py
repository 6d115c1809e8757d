"""The PNG grid logged with every run: image, attention, pseudo label, prediction, ground truth."""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from inetseg import config as C
from inetseg import imaging, masks, shards, storage, viz
from inetseg.attention.maps import Method, attention_maps, pseudo_label
from inetseg.models.io import load_model
from inetseg.train.data import normalise


def _first_rows(path: str, n: int, columns: list[str]) -> dict[str, list]:
    """The first n rows of a stage table (reads only the first files needed)."""
    fs, _ = storage.resolve(path)
    out: dict[str, list] = {c: [] for c in columns}
    for f in shards.parquet_files(path):
        t = pq.read_table(storage.resolve(f)[1], filesystem=fs, columns=columns)
        for c in columns:
            out[c].extend(t.column(c).to_pylist())
        if len(out[columns[0]]) >= n:
            break
    return {c: v[:n] for c, v in out.items()}


def grid_png(cfg: Any, classes: list[str], n: int) -> bytes:
    """Rows of test images: the classifier's attention for its top class (no test label is used),
    the trimap of that attention, the final prediction and the ground truth."""
    rows = _first_rows(cfg.evaluate.predictions, n, ["image", "gt", "pred"])
    device = torch.device("cpu")
    model, meta = load_model(cfg.attention.model, device, "classifier")
    images = [imaging.decode_rgb(b) for b in rows["image"]]
    if not images:
        return viz.encode_png(np.zeros((8, 8, 3), np.uint8))
    x = normalise(np.stack([imaging.resize_square(im, meta["input_size"]) for im in images]))
    with torch.no_grad():
        top = model(torch.from_numpy(x)).argmax(1).numpy() + 1  # 1..K
    method = C.subset(Method, cfg.attention)
    maps = attention_maps(model, images, top, cfg.attention.input_size, device, method)
    grid_rows = []
    for im, att, lab, pred, gt in zip(images, maps, top, rows["pred"], rows["gt"]):
        pseudo, att = pseudo_label(att, im, int(lab), method)
        cells = [im, viz.heatmap(att), viz.colorize(pseudo), viz.colorize(masks.decode_mask(pred))]
        cells.append(viz.colorize(masks.decode_mask(gt)) if gt is not None else np.zeros_like(im))
        grid_rows.append(cells)
    return viz.encode_png(viz.grid(grid_rows, ["image", "attention", "pseudo", "prediction", "GT"]))
