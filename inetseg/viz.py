"""Pictures for people: colour label maps, heatmaps, image grids (pure numpy/cv2)."""
from __future__ import annotations

import cv2
import numpy as np


def palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map (n x 3 uint8); 255 = ignore drawn light grey."""
    pal = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    if n > 255:
        pal[255] = (224, 224, 192)
    return pal


_PALETTE = palette()


def colorize(label_map: np.ndarray) -> np.ndarray:
    """H x W uint8 class ids -> H x W x 3 uint8 RGB."""
    return _PALETTE[label_map.astype(np.uint8)]


def heatmap(att: np.ndarray) -> np.ndarray:
    """H x W float in [0, 1] -> H x W x 3 uint8 RGB (JET colour map)."""
    u8 = (np.clip(att, 0, 1) * 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(u8, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


def grid(rows: list[list[np.ndarray]], titles: list[str] | None = None, cell: int = 128) -> np.ndarray:
    """Cells (H x W x 3 uint8) resized to cell x cell, 2-px white borders, optional column titles on top."""
    ncol = max(len(r) for r in rows)
    pad = 2
    head = 18 if titles else 0
    h = head + len(rows) * (cell + pad) + pad
    w = ncol * (cell + pad) + pad
    out = np.full((h, w, 3), 255, np.uint8)
    for j, title in enumerate(titles or []):
        cv2.putText(out, title, (pad + j * (cell + pad) + 2, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1,
                    cv2.LINE_AA)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            y, x = head + pad + i * (cell + pad), pad + j * (cell + pad)
            out[y:y + cell, x:x + cell] = cv2.resize(img, (cell, cell), interpolation=cv2.INTER_NEAREST)
    return out


def encode_png(rgb: np.ndarray) -> bytes:
    """H x W x 3 RGB uint8 -> PNG bytes."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def overlay(image: np.ndarray, labels: np.ndarray, names: list[str], alpha: float = 0.5) -> np.ndarray:
    """The photo (H x W x 3 RGB) with each labelled pixel's class colour blended in, plus a legend.

    labels: H x W class ids (0 = background, left unblended so the photo stays readable);
    names[i] is class i's name; the legend lists the non-background classes present.
    """
    out = image.copy()
    fg = labels > 0
    out[fg] = (image[fg] * (1 - alpha) + colorize(labels)[fg] * alpha).astype(np.uint8)
    present = [int(c) for c in np.unique(labels) if 0 < c < len(names)]
    return draw_legend(out, [(names[c], tuple(int(v) for v in _PALETTE[c])) for c in present])


def draw_legend(image: np.ndarray, entries: list[tuple[str, tuple[int, int, int]]]) -> np.ndarray:
    """Draw (name, RGB colour) swatches in a white box at the top-left corner, sized to the image, in place."""
    if not entries:
        return image
    # Text about 1/30 of the shorter side, so the legend reads the same on a thumbnail and on a 12 MP photo.
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, max(0.3, min(image.shape[:2]) / 900)
    thick = max(1, round(scale * 1.5))
    sizes = [cv2.getTextSize(name, font, scale, thick)[0] for name, _ in entries]
    th = max(h for _, h in sizes)
    pad, row = max(2, th // 3), th + 2 * max(2, th // 3)
    box_w = 3 * pad + th + max(w for w, _ in sizes)
    cv2.rectangle(image, (0, 0), (box_w, row * len(entries) + pad), (255, 255, 255), -1)
    for i, (name, colour) in enumerate(entries):
        y = pad + i * row
        cv2.rectangle(image, (pad, y), (pad + th, y + th), colour, -1)
        cv2.rectangle(image, (pad, y), (pad + th, y + th), (0, 0, 0), 1)
        cv2.putText(image, name, (2 * pad + th, y + th), font, scale, (0, 0, 0), thick, cv2.LINE_AA)
    return image
