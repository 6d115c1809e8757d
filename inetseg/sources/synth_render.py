"""Drawing primitives of the synthetic corpus: textures, bodies, class emblems (pure numpy/cv2)."""
from __future__ import annotations

import cv2
import numpy as np

# Body colours are shared by every class, so a body alone never tells the class.
BODY_COLOURS = np.array([
    (150, 110, 80), (120, 130, 90), (110, 110, 140), (160, 140, 100), (100, 120, 120), (140, 100, 120),
], dtype=np.float32)

# Emblems: the small class-discriminative part, a (shape, colour) pair unique to each of 20 classes.
PART_SHAPES = ("disc", "square", "triangle", "cross", "diamond", "ring", "star", "bar", "chevron", "dots")
PART_COLOURS = np.array([(235, 40, 40), (40, 90, 235), (245, 215, 30), (30, 200, 80), (220, 60, 220)],
                        dtype=np.float32)


def value_noise(rng: np.random.Generator, size: int, octaves: tuple[int, ...] = (4, 8, 16, 32)) -> np.ndarray:
    """Multi-octave value noise in [0, 1], size x size float32 (natural-looking texture)."""
    out = np.zeros((size, size), np.float32)
    weight_sum = 0.0
    for i, cells in enumerate(octaves):
        grid = rng.random((cells, cells)).astype(np.float32)
        w = 0.5 ** i
        out += w * cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
        weight_sum += w
    out /= weight_sum
    lo, hi = out.min(), out.max()
    return (out - lo) / max(1e-6, hi - lo)


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Cluttered natural texture: two-colour noise, sometimes stripes, a lighting gradient. HxWx3 float."""
    c1, c2 = rng.uniform(30, 220, (2, 3)).astype(np.float32)
    t = value_noise(rng, size)[..., None]
    img = c1 * (1 - t) + c2 * t
    if rng.random() < 0.3:  # stripes: grass, fences, brick-like clutter
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(6, 18)
        s = 0.5 + 0.5 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
        img = img * (0.8 + 0.2 * s[..., None])
    gy, gx = rng.uniform(-0.25, 0.25, 2)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    img *= (1 + gy * yy + gx * xx)[..., None]
    return img


def body_mask(rng: np.random.Generator, size: int, centre: tuple[float, float], scale: float,
              angle: float) -> np.ndarray:
    """A blob-shaped body: an ellipse with a lumpy outline, uint8 {0,1} size x size."""
    n = 24
    theta = np.linspace(0, 2 * np.pi, n, endpoint=False)
    a, b = scale, scale * rng.uniform(0.55, 0.85)
    r = 1 + 0.12 * np.sin(theta * rng.integers(2, 5) + rng.uniform(0, 6.3)) + rng.normal(0, 0.03, n)
    x, y = a * r * np.cos(theta), b * r * np.sin(theta)
    ca, sa = np.cos(angle), np.sin(angle)
    pts = np.stack([centre[0] + x * ca - y * sa, centre[1] + x * sa + y * ca], 1)
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [np.round(pts * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return mask


def body_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """Fur-like texture in a shared body colour, HxWx3 float."""
    base = BODY_COLOURS[rng.integers(len(BODY_COLOURS))] * rng.uniform(0.8, 1.2)
    t = value_noise(rng, size, (8, 16, 32))[..., None]
    return base * (0.7 + 0.6 * t)


def part_mask(shape: str, size: int, centre: tuple[float, float], radius: float, angle: float) -> np.ndarray:
    """The emblem of one class, uint8 {0,1} size x size."""
    m = np.zeros((size, size), np.uint8)
    cx, cy = centre
    r = max(2.0, radius)

    def poly(points: np.ndarray) -> None:
        ca, sa = np.cos(angle), np.sin(angle)
        p = np.stack([cx + points[:, 0] * ca - points[:, 1] * sa, cy + points[:, 0] * sa + points[:, 1] * ca], 1)
        cv2.fillPoly(m, [np.round(p * 16).astype(np.int32)], 1, shift=4)

    if shape == "disc":
        cv2.circle(m, (int(cx), int(cy)), int(r), 1, -1)
    elif shape == "ring":
        cv2.circle(m, (int(cx), int(cy)), int(r), 1, max(2, int(r * 0.45)))
    elif shape == "square":
        poly(np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * r * 0.85)
    elif shape == "diamond":
        poly(np.array([[0, -1.2], [1, 0], [0, 1.2], [-1, 0]]) * r)
    elif shape == "triangle":
        poly(np.array([[0, -1.2], [1.1, 0.8], [-1.1, 0.8]]) * r)
    elif shape == "cross":
        w = 0.38
        poly(np.array([[-1, -w], [1, -w], [1, w], [-1, w]]) * r)
        poly(np.array([[-w, -1], [w, -1], [w, 1], [-w, 1]]) * r)
    elif shape == "star":
        t = np.linspace(0, 2 * np.pi, 10, endpoint=False) - np.pi / 2
        rr = np.where(np.arange(10) % 2 == 0, 1.2, 0.5)
        poly(np.stack([rr * np.cos(t), rr * np.sin(t)], 1) * r)
    elif shape == "bar":
        poly(np.array([[-1.3, -0.45], [1.3, -0.45], [1.3, 0.45], [-1.3, 0.45]]) * r)
    elif shape == "chevron":
        poly(np.array([[-1.1, -0.9], [0, 0.1], [1.1, -0.9], [1.1, -0.1], [0, 0.9], [-1.1, -0.1]]) * r)
    elif shape == "dots":
        for dx, dy in ((-0.6, -0.6), (0.6, -0.6), (0, 0.6)):
            cv2.circle(m, (int(cx + dx * r), int(cy + dy * r)), max(1, int(r * 0.45)), 1, -1)
    else:
        raise ValueError(f"unknown part shape {shape!r}")
    return m


def class_part(class_index: int) -> tuple[str, np.ndarray]:
    """(shape, colour) of class 1..20's emblem: unique pairs; the first five differ in both."""
    i = class_index - 1
    return PART_SHAPES[i % len(PART_SHAPES)], PART_COLOURS[(i + i // len(PART_SHAPES)) % len(PART_COLOURS)]


def finish(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Camera-like degradation (slight blur, sensor noise) -> uint8 RGB."""
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (3, 3), rng.uniform(0.3, 1.0))
    img = img + rng.normal(0, 6, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)
