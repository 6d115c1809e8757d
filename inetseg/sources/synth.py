"""The offline default source: a synthetic, noisy 'web image search' corpus, deterministic by seed.

Each class's object is a BODY (blob shape, fur-like texture, colours shared by all classes) carrying a
small class-discriminative PART (an emblem: shape x colour, about a tenth of the object). A classifier
only needs the part, so its CAM lights the part, while the ground truth is the whole object: the
paper's "complete objects" problem. Backgrounds are multi-octave noise and stripes with body-like
distractors that carry no part. Search results get Flickr-like label noise: wrong tags, no object,
extra objects of other classes, small or cut-off objects. The ground truth of every search image is
written to a hidden sidecar that only measurement code reads.
"""
from __future__ import annotations

import dataclasses
import json
import time

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from inetseg import storage
from inetseg.config import SynthConfig
from inetseg.progress import bar as progress_bar
from inetseg.sources import synth_render as R

NAMES = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett",
         "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango")
NOISE_TYPES = ("clean", "wrong_tag", "no_object", "multi", "small_or_cut")
_SPLIT = {"search": 1, "test": 2, "heldout": 3}


def class_names(num_classes: int) -> list[str]:
    """Folder-safe, unique class names in label order (label i = names[i-1])."""
    if not 1 <= num_classes <= len(NAMES):
        raise ValueError(f"num_classes must be in 1..{len(NAMES)}, got {num_classes}")
    return list(NAMES[:num_classes])


def _rng(cfg: SynthConfig, split: str, class_index: int, index: int) -> np.random.Generator:
    """One independent stream per image, so any image can be regenerated alone."""
    return np.random.default_rng([cfg.seed, _SPLIT[split], class_index, index])


def render_object(rng: np.random.Generator, size: int, class_index: int, centre: tuple[float, float],
                  scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(body mask, part mask, body texture, part colour) of one object; masks uint8 {0,1} size x size."""
    angle = rng.uniform(0, 2 * np.pi)
    body = R.body_mask(rng, size, centre, scale, angle)
    # The part sits towards one end of the body, partly overlapping its outline, like a head.
    along = rng.uniform(0.55, 0.8) * scale
    pc = (centre[0] + along * np.cos(angle), centre[1] + along * np.sin(angle))
    shape, colour = R.class_part(class_index)
    part = R.part_mask(shape, size, pc, 0.3 * scale, rng.uniform(0, 2 * np.pi))
    return body, part, R.body_texture(rng, size), colour * rng.uniform(0.85, 1.1)


def _paint(img: np.ndarray, mask_out: np.ndarray, rng: np.random.Generator, class_index: int,
           centre: tuple[float, float], scale: float) -> None:
    """Draw one object into img (HxWx3 float) and its class id into mask_out, in place."""
    size = img.shape[0]
    body, part, tex, colour = render_object(rng, size, class_index, centre, scale)
    b = body.astype(bool)
    img[b] = tex[b]
    p = part.astype(bool)
    shade = 0.85 + 0.3 * R.value_noise(rng, size, (8, 16))[..., None]
    img[p] = (colour * shade)[p]
    mask_out[b | p] = class_index


def _distractors(img: np.ndarray, rng: np.random.Generator, count: int) -> None:
    """Body-like blobs without any part, and small coloured clutter: background in the GT."""
    size = img.shape[0]
    for _ in range(count):
        c = tuple(rng.uniform(0.1, 0.9, 2) * size)
        m = R.body_mask(rng, size, c, rng.uniform(0.1, 0.22) * size, rng.uniform(0, 6.3)).astype(bool)
        img[m] = R.body_texture(rng, size)[m]
    for _ in range(rng.integers(0, 3)):  # non-emblem clutter so colour alone is not the class
        c = (int(rng.uniform(0, size)), int(rng.uniform(0, size)))
        col = tuple(float(v) for v in rng.uniform(40, 200, 3))
        cv2.circle(img, c, int(rng.uniform(0.02, 0.05) * size), col, -1)


def _place(rng: np.random.Generator, size: int, scale: float, cut: bool = False,
           avoid: tuple[float, float] | None = None) -> tuple[float, float]:
    """An object centre: inside the frame, at a border when cut, away from `avoid` when given."""
    if cut:
        edge = rng.integers(4)
        t, d = rng.uniform(0.25, 0.75) * size, rng.uniform(0.0, 0.35) * scale
        return [(d, t), (size - d, t), (t, d), (t, size - d)][edge]
    margin = 1.1 * scale
    for _ in range(20):
        c = tuple(rng.uniform(margin, max(margin + 1, size - margin), 2))
        if avoid is None or np.hypot(c[0] - avoid[0], c[1] - avoid[1]) > 1.6 * scale:
            return c
    return c


def _noise_type(cfg: SynthConfig, rng: np.random.Generator) -> str:
    u = rng.random()
    for name, p in (("wrong_tag", cfg.p_wrong_tag), ("no_object", cfg.p_no_object), ("multi", cfg.p_multi),
                    ("small_or_cut", cfg.p_small_or_cut)):
        if u < p:
            return name
        u -= p
    return "clean"


def render_search_image(cfg: SynthConfig, class_index: int, index: int,
                        split: str = "search") -> tuple[np.ndarray, np.ndarray, str, list[int]]:
    """One search result for the tag `class_index` (1..K): (rgb HxWx3 uint8, GT HxW uint8, noise, present)."""
    rng = _rng(cfg, split, class_index, index)
    size, k = cfg.image_size, cfg.num_classes
    noise = _noise_type(cfg, rng)
    img = R.background(rng, size)
    mask = np.zeros((size, size), np.uint8)
    _distractors(img, rng, int(rng.integers(0, 3)))
    scale = rng.uniform(0.18, 0.27) * size
    others = [c for c in range(1, k + 1) if c != class_index]
    if noise == "wrong_tag" and others:
        _paint(img, mask, rng, int(rng.choice(others)), _place(rng, size, scale), scale)
    elif noise == "multi" and others:
        c1 = _place(rng, size, scale * 0.85)
        _paint(img, mask, rng, class_index, c1, scale * 0.85)
        _paint(img, mask, rng, int(rng.choice(others)), _place(rng, size, scale * 0.85, avoid=c1), scale * 0.85)
    elif noise == "small_or_cut":
        if rng.random() < 0.5:
            small = rng.uniform(0.08, 0.12) * size
            _paint(img, mask, rng, class_index, _place(rng, size, small), small)
        else:
            _paint(img, mask, rng, class_index, _place(rng, size, scale, cut=True), scale)
    elif noise != "no_object":
        _paint(img, mask, rng, class_index, _place(rng, size, scale), scale)
    present = sorted(int(v) for v in np.unique(mask) if v > 0)
    if noise in ("wrong_tag", "multi") and not others:
        noise = "clean"
    return R.finish(img, rng), mask, noise, present


def render_test_image(cfg: SynthConfig, index: int) -> tuple[np.ndarray, np.ndarray]:
    """A clean test image: one or two whole objects of random classes, distractors allowed."""
    rng = _rng(cfg, "test", 0, index)
    size = cfg.image_size
    img = R.background(rng, size)
    mask = np.zeros((size, size), np.uint8)
    _distractors(img, rng, int(rng.integers(0, 3)))
    n = 1 if rng.random() < 0.7 or cfg.num_classes < 2 else 2
    scale = rng.uniform(0.18, 0.27) * size * (0.85 if n == 2 else 1.0)
    classes = rng.choice(np.arange(1, cfg.num_classes + 1), size=n, replace=False)
    c1 = _place(rng, size, scale)
    _paint(img, mask, rng, int(classes[0]), c1, scale)
    if n == 2:
        _paint(img, mask, rng, int(classes[1]), _place(rng, size, scale, avoid=c1), scale)
    return R.finish(img, rng), mask


def _png(arr: np.ndarray) -> bytes:
    return cv2.imencode(".png", arr if arr.ndim == 2 else cv2.cvtColor(arr, cv2.COLOR_RGB2BGR))[1].tobytes()


def _jpeg(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()


def _settings(cfg: SynthConfig) -> dict:
    """What determines the corpus's content (the output folder does not)."""
    d = dataclasses.asdict(cfg)
    d.pop("out", None)
    return d


def _write_search(cfg: SynthConfig, out: str, split: str, names: list[str], count: int, bar) -> dict:
    """Write one folder-per-tag split; returns the sidecar columns."""
    rows: dict[str, list] = {"file": [], "tag": [], "noise": [], "present": [], "mask": []}
    for ci, tag in enumerate(names, start=1):
        storage.makedirs(storage.join(out, split, tag))
        for i in range(count):
            rgb, mask, noise, present = render_search_image(cfg, ci, i, split)
            rel = f"{tag}/{tag}_{i:05d}.jpg"
            storage.write_bytes(storage.join(out, split, rel), _jpeg(rgb))
            for key, v in (("file", rel), ("tag", tag), ("noise", noise), ("present", present),
                           ("mask", _png(mask))):
                rows[key].append(v)
            bar.update(1)
    return rows


_TRUTH_SCHEMA = pa.schema([("file", pa.string()), ("tag", pa.string()), ("noise", pa.string()),
                           ("present", pa.list_(pa.int16())), ("mask", pa.binary())])


def _write_truth(path: str, rows: dict) -> None:
    fs, inner = storage.resolve(path)
    fs.create_dir(inner.rsplit("/", 1)[0], recursive=True)
    pq.write_table(pa.Table.from_pydict(rows, schema=_TRUTH_SCHEMA), inner, filesystem=fs)


def generate(cfg: SynthConfig, out: str, progress: bool = True) -> dict:
    """Write the corpus under `out` (see module doc); reuse it when already complete with these settings."""
    marker = storage.join(out, "_SUCCESS")
    if storage.exists(marker):
        done = storage.read_json(marker)
        if done.get("settings") == _settings(cfg):
            return done
    t0 = time.time()
    names = class_names(cfg.num_classes)
    total = len(names) * (cfg.images_per_class + cfg.heldout_images) + cfg.test_images
    with progress_bar(total, "synth corpus", "img", enabled=progress) as bar:
        rows = _write_search(cfg, out, "search", names, cfg.images_per_class, bar)
        _write_truth(storage.join(out, "hidden", "train_truth.parquet"), rows)
        if cfg.heldout_images:
            held = _write_search(cfg, out, "heldout", names, cfg.heldout_images, bar)
            _write_truth(storage.join(out, "hidden", "heldout_truth.parquet"), held)
        storage.write_text(storage.join(out, "hidden", "README.txt"),
                           "Ground truth of the search images. The pipeline never reads this folder;\n"
                           "only measurement code (inetseg/audit.py, benchmarks) does.\n")
        for i in range(cfg.test_images):
            rgb, mask = render_test_image(cfg, i)
            storage.write_bytes(storage.join(out, "test", "images", f"test_{i:05d}.png"), _png(rgb))
            storage.write_bytes(storage.join(out, "test", "masks", f"test_{i:05d}.png"), _png(mask))
            bar.update(1)
    storage.write_text(storage.join(out, "classes.json"), json.dumps(
        {"classes": names, "num_classes": cfg.num_classes, "image_size": cfg.image_size, "seed": cfg.seed}))
    summary = {"settings": _settings(cfg), "classes": names, "search_images": len(rows["file"]),
               "test_images": cfg.test_images, "noise": {n: rows["noise"].count(n) for n in NOISE_TYPES},
               "seconds": round(time.time() - t0, 2)}
    storage.write_json(marker, summary)
    return summary


def run(cfg: SynthConfig, resume: bool = True) -> dict:
    """The stage entry (registry): generate into cfg.out; resume=False renders the corpus again."""
    marker = storage.join(cfg.out, "_SUCCESS")
    if not resume and storage.exists(marker):
        storage.delete_file(marker)
    return generate(cfg, cfg.out)
