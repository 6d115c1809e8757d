"""Decode, validate, resize and encode images and label maps: pure functions, no Ray."""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Any

# OpenCV's own refusal to allocate for a header's pixel count, read once per process at its first decode (all
# decoding goes through this module): a backstop behind decode_rgb's checks for formats whose ratio of pixels to
# bytes has no useful bound (TIFF's fax coding, lossless WebP). OpenCV's default is 2**30.
HARD_MAX_PIXELS = 2**28
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(HARD_MAX_PIXELS))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

# Magic bytes of the formats we accept; anything else is 'not_an_image' before we try to decode.
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"RIFF",
          b"II*\x00", b"MM\x00*")  # the last two: TIFF (little/big-endian)
# File names taken for images when a folder is listed (ingest, segment); the magic bytes still decide.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff")


class ImageError(ValueError):
    """An input image is unusable; `reason` is a short stable key counted in stats."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ImageLimits:
    """What ingest accepts (IngestConfig's keys of the same names)."""

    max_side: int = 500  # longer side after resizing
    min_side: int = 32  # smaller images are 'too_small'
    max_aspect: float = 4.0  # more elongated ones are 'bad_aspect'
    max_pixels: int = 50_000_000  # decoded size limit: decompression bombs are 'too_many_pixels'


_DEFLATE_MAX_RATIO = 1032  # the most raw bytes one compressed byte of a deflate stream can expand to


def sniff(data: bytes) -> bool:
    """True if the bytes start like an image format we decode."""
    return any(data.startswith(m) for m in _MAGIC)


def _header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header, without decoding pixels, when cheap to read."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except Image.DecompressionBombError as e:  # PIL's own guard fired on the declared size
        raise ImageError("too_many_pixels", str(e)[:120]) from None
    except Exception:  # any other header failure means 'decode and see'
        return None


def decode_rgb(data: bytes, max_pixels: int = 50_000_000) -> np.ndarray:
    """Bytes -> HxWx3 uint8 RGB with EXIF orientation applied; grey/alpha/16-bit converted.

    Raises ImageError('empty' | 'not_an_image' | 'too_many_pixels' | 'undecodable').
    """
    return to_rgb(_decode(data, max_pixels))


def _decode(data: bytes, max_pixels: int) -> np.ndarray:
    """decode_rgb's checks and decode, leaving the pixels in OpenCV's order: HxW grey or HxWx3 BGR uint8."""
    if not data:
        raise ImageError("empty")
    if not sniff(data):
        raise ImageError("not_an_image", "unknown magic bytes")
    size = _header_size(data)
    # Check the declared size before decoding: a decompression bomb is small on disk, huge in RAM.
    if size is not None and size[0] * size[1] > max_pixels:
        raise ImageError("too_many_pixels", f"{size[0]}x{size[1]}")
    # A header PIL cannot read (a PNG with a broken ancillary chunk, which libpng skips) tells no size: decode only
    # a file too small to hold more than max_pixels at deflate's ~1032:1 ceiling; OpenCV's cap backs this up.
    if size is None and len(data) * _DEFLATE_MAX_RATIO > 3 * max_pixels:
        raise ImageError("unreadable_header", f"{len(data)} bytes of unknown pixel count")
    buf = np.frombuffer(data, dtype=np.uint8)
    # IMREAD_COLOR applies EXIF orientation and converts grey/CMYK/palette to 3 channels;
    # ANYDEPTH keeps 16-bit so we can scale it rather than clip it.
    try:
        img: Any = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)  # uint8, uint16 or float
    except cv2.error as e:  # OpenCV's pixel cap (HARD_MAX_PIXELS) or a decoder that raises instead of failing
        reason = "too_many_pixels" if "MAX_IMAGE_PIXELS" in str(e) else "undecodable"
        raise ImageError(reason, str(e).strip().splitlines()[-1][:160]) from None
    if img is None:
        raise ImageError("undecodable", "decoder returned nothing")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = cv2.normalize(img, np.empty_like(img), 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if img.ndim == 3 and img.shape[2] > 3:
        img = np.ascontiguousarray(img[:, :, :3])
    if img.shape[0] * img.shape[1] > max_pixels:
        raise ImageError("too_many_pixels", f"{img.shape[1]}x{img.shape[0]}")
    return img


def to_rgb(img: np.ndarray) -> np.ndarray:
    """OpenCV's grey or BGR uint8 -> HxWx3 RGB (a new contiguous array)."""
    return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB if img.ndim == 2 else cv2.COLOR_BGR2RGB)


def validate(img: np.ndarray, limits: ImageLimits) -> None:
    """Reject tiny or absurdly elongated images (ImageError 'too_small' / 'bad_aspect')."""
    h, w = img.shape[:2]
    if min(h, w) < limits.min_side:
        raise ImageError("too_small", f"{w}x{h}")
    if max(h, w) / max(1, min(h, w)) > limits.max_aspect:
        raise ImageError("bad_aspect", f"{w}x{h}")


def resize_max_side(img: np.ndarray, max_side: int, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
    """Shrink so that the longer side is at most max_side; never enlarge."""
    h, w = img.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return img
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(img, size, interpolation=interpolation)


def encode_jpeg(img: np.ndarray, quality: int = 90) -> bytes:
    """HxWx3 RGB uint8 -> JPEG bytes."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ImageError("encode_failed")
    return buf.tobytes()


def encode_png(arr: np.ndarray) -> bytes:
    """HxW uint8 label map or HxWx3 RGB image -> PNG bytes (lossless, for masks)."""
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", arr)
    if not ok:
        raise ImageError("encode_failed")
    return buf.tobytes()


def prepare(data: bytes, limits: ImageLimits) -> np.ndarray:
    """Decode -> validate -> resize: the RGB array the ingest stores (raises ImageError). The same pixels as
    resize_max_side(decode_rgb(data)), with the colour conversion done on the resized image (a channel swap
    commutes with a per-channel resize), which is most of the ingest's photos' pixels fewer to convert."""
    img = _decode(data, limits.max_pixels)
    validate(img, limits)
    return to_rgb(resize_max_side(img, limits.max_side))


def process(data: bytes, limits: ImageLimits, quality: int = 90) -> tuple[bytes, int, int]:
    """The ingest transform: decode -> validate -> resize -> JPEG. Returns (jpeg, height, width)."""
    img = prepare(data, limits)
    return encode_jpeg(img, quality), img.shape[0], img.shape[1]


def resize_square(img: np.ndarray, size: int) -> np.ndarray:
    """Resize (ignoring aspect) to size x size; bilinear for images."""
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)


PAD_VALUE = 128  # grey that letterboxed images are padded with (0 after normalisation)


def letterbox(img: np.ndarray, size: int, pad_value: int = PAD_VALUE,
              interpolation: int = cv2.INTER_LINEAR) -> tuple[np.ndarray, tuple[int, int]]:
    """Resize so the longer side is `size` (aspect kept), pad bottom/right to size x size.

    Returns the padded array and the (height, width) of the image inside it. This is how the
    segmenter sees whole images (training pads its crops the same way), so a 4:3 photo is not squashed.
    """
    h, w = img.shape[:2]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    small = cv2.resize(img, (nw, nh), interpolation=interpolation)
    pad = [(0, size - nh), (0, size - nw)] + [(0, 0)] * (img.ndim - 2)
    return np.pad(small, pad, constant_values=pad_value), (nh, nw)


def resize_labels(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a label map with nearest neighbour, so no invented class ids appear."""
    return cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
