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


def confusion_image(cm: np.ndarray, names: list[str], cell: int = 40) -> np.ndarray:
    """C x (C+1) confusion counts -> RGB picture: rows (ground truth) normalised, names on both axes, values in cells.

    The last column is the metrics' 'no label' column (pixels predicted 255 or out of range).
    """
    c = cm.shape[0]
    cols = [*names, "no label"]
    totals = cm.sum(1, keepdims=True)
    share = cm / np.maximum(totals, 1)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.4
    label_w = max(cv2.getTextSize(n, font, scale, 1)[0][0] for n in cols) + 8
    left = top = label_w + 20  # names plus an axis title
    out = np.full((top + c * cell + 4, left + (c + 1) * cell + 4, 3), 255, np.uint8)
    for i in range(c):
        for j in range(c + 1):
            _confusion_cell(out, top + i * cell, left + j * cell, cell, share[i, j] if totals[i, 0] else None,
                            diagonal=i == j)
        _text(out, names[i], left - 6 - cv2.getTextSize(names[i], font, scale, 1)[0][0], top + i * cell + cell // 2 + 4)
    for j, name in enumerate(cols):
        strip = np.full((cell, label_w, 3), 255, np.uint8)
        _text(strip, name, 4, cell // 2 + 4)
        # Turned a quarter so long names fit above narrow columns; read bottom to top.
        out[top - label_w - 2:top - 2, left + j * cell:left + (j + 1) * cell] = np.rot90(strip)
    _text(out, "predicted (rows sum to 1)", left, 14)
    side = np.full((20, out.shape[0], 3), 255, np.uint8)
    _text(side, "ground truth", 4, 14)
    out[:, :20] = np.rot90(side)
    return out


def _confusion_cell(out: np.ndarray, y: int, x: int, cell: int, value: float | None, diagonal: bool) -> None:
    """One cell: white to blue by share, the share written in it ('-' for a class absent from gt)."""
    v = 0.0 if value is None else float(value)
    out[y + 1:y + cell, x + 1:x + cell] = (round(255 - 215 * v), round(255 - 175 * v), 255)
    if diagonal:
        cv2.rectangle(out, (x, y), (x + cell, y + cell), (0, 0, 0), 1)
    text = "-" if value is None else f"{v:.2f}"
    _text(out, text, x + 4, y + cell // 2 + 4, (255, 255, 255) if v > 0.5 else (0, 0, 0), 0.35)


def _text(img: np.ndarray, text: str, x: int, y: int, colour: tuple[int, int, int] = (0, 0, 0),
          scale: float = 0.4) -> None:
    """Anti-aliased Hershey text with its baseline at (x, y)."""
    cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)


def overlay(image: np.ndarray, labels: np.ndarray, names: list[str], alpha: float = 0.5) -> np.ndarray:
    """The photo (H x W x 3 RGB) with each labelled pixel's class colour blended in, plus a legend.

    labels: H x W class ids (0 = background, left unblended so the photo stays readable);
    names[i] is class i's name; the legend lists the non-background classes present.
    """
    out = image.copy()
    fg = labels > 0
    out[fg] = (image[fg] * (1 - alpha) + colorize(labels)[fg] * alpha).astype(np.uint8)
    present = [int(c) for c in np.unique(labels) if 0 < c < len(names)]
    return draw_legend(out, [(names[c], (int(_PALETTE[c][0]), int(_PALETTE[c][1]), int(_PALETTE[c][2])))
                             for c in present])


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
