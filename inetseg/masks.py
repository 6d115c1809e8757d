"""Label masks in every common encoding -> class ids, and palette PNGs for people (pure, no Ray).

Read rules, one per PIL mode (the file says what it is; we never guess):
  P (palette)        the palette index is the id (PASCAL VOC); the colours are only for people
  L / 1 (grey)       the stored value is the id; 16-bit grey (I;16, I) too, but a value above 255
                     cannot be a uint8 class id and is an error
  RGB / RGBA         colour-coded through a colour map (VOC's by default; alpha ignored); an image
                     whose three channels are equal everywhere is grey saved as RGB
Anything else (unknown colour, lossy JPEG, CMYK, undecodable bytes) raises MaskError naming the file.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from inetseg import viz

VOC_COLOURS = viz.palette()  # id -> RGB, 256 x 3 uint8; 255 (void) is (224, 224, 192)
_GREY_MODES = ("L", "1")
_GREY16_MODES = ("I;16", "I;16L", "I;16B", "I")


class MaskError(ValueError):
    """A mask fits no encoding we read; the message names the file and what was wrong."""

    def __init__(self, name: str, problem: str):
        super().__init__(f"mask {name}: {problem}")


def decode_mask(data: bytes, name: str = "(bytes)", colours: np.ndarray = VOC_COLOURS) -> np.ndarray:
    """Mask file bytes -> H x W uint8 class ids by the rules above; `name` is for error messages."""
    img = _open(data, name)
    if img.mode == "P":
        return np.array(img, dtype=np.uint8)
    if img.mode in _GREY_MODES:
        return np.array(img).astype(np.uint8)
    if img.mode in _GREY16_MODES:
        return _narrow(np.array(img), name)
    if img.mode in ("RGB", "RGBA"):
        return _from_rgb(np.array(img.convert("RGB")), name, colours)
    raise MaskError(name, f"PIL mode {img.mode} is not a mask encoding (palette, grey or RGB PNG)")


def encode_palette_png(ids: np.ndarray, colours: np.ndarray = VOC_COLOURS) -> bytes:
    """H x W uint8 class ids -> palette PNG bytes: indices are the ids, colours VOC's (for viewers)."""
    if ids.ndim != 2 or ids.dtype != np.uint8:
        raise ValueError(f"ids must be H x W uint8, got {ids.shape} {ids.dtype}")
    img = Image.fromarray(ids)
    img.putpalette(colours.astype(np.uint8).tobytes())  # an L image with a palette becomes mode P
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _open(data: bytes, name: str) -> Image.Image:
    """PIL image with pixels loaded; refuses lossy formats, whose edges hold ids that were never drawn."""
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise MaskError(name, f"undecodable ({type(e).__name__}: {str(e)[:80]})") from None
    if img.format in ("JPEG", "MPO", "WEBP"):
        raise MaskError(name, f"{img.format} is lossy and blurs class ids; masks must be PNG")
    return img


def _narrow(arr: np.ndarray, name: str) -> np.ndarray:
    """16/32-bit grey ids -> uint8, exactly; a value over 255 is an error, not a wrap-around."""
    top = int(arr.max()) if arr.size else 0
    if top > 255 or (arr.size and int(arr.min()) < 0):
        raise MaskError(name, f"16-bit grey value {top} is not a class id 0..255")
    return arr.astype(np.uint8)


def _from_rgb(rgb: np.ndarray, name: str, colours: np.ndarray) -> np.ndarray:
    """H x W x 3 colour-coded mask -> ids through `colours`; equal channels read as grey."""
    ids, known = _lookup(rgb, colours)
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        grey = rgb[..., 0].copy()
        # VOC draws some ids in grey ((128,128,128) = 7, car): then both readings fit and differ.
        if known.all() and not np.array_equal(ids, grey):
            raise MaskError(name, "ambiguous: grey RGB whose values are also colour-map colours; "
                                  "save it as a palette or single-channel PNG")
        return grey
    if not known.all():
        y, x = np.argwhere(~known)[0]
        raise MaskError(name, f"colour {tuple(int(v) for v in rgb[y, x])} at (row {y}, col {x}) is not in the "
                              f"colour map ({int((~known).sum())} pixels)")
    return ids


def _lookup(rgb: np.ndarray, colours: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ids, known) per pixel: colours packed into 24-bit keys and found by binary search."""
    keys = _pack(colours)
    order = np.argsort(keys, kind="stable")
    pix = _pack(rgb)
    pos = np.clip(np.searchsorted(keys[order], pix), 0, len(keys) - 1)
    known = keys[order][pos] == pix
    return order[pos].astype(np.uint8), known


def _pack(rgb: np.ndarray) -> np.ndarray:
    """... x 3 uint8 -> ... int32 keys r << 16 | g << 8 | b."""
    c = rgb.astype(np.int32)
    return (c[..., 0] << 16) | (c[..., 1] << 8) | c[..., 2]
