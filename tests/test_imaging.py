"""Decode / validate / resize / encode on small generated images, including hostile ones."""
import io
import os

import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

from inetseg import imaging, masks


def _bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["RGB", "L", "P", "RGBA", "CMYK"])
def test_modes_become_rgb(mode):
    img = Image.new("RGB", (64, 48), (200, 30, 40)).convert(mode)
    fmt = "JPEG" if mode in ("L", "CMYK", "RGB") else "PNG"
    arr = imaging.decode_rgb(_bytes(img, fmt))
    assert arr.shape == (48, 64, 3) and arr.dtype == np.uint8


def test_16bit_png_is_scaled_not_clipped():
    arr16 = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
    import cv2

    ok, buf = cv2.imencode(".png", arr16)
    rgb = imaging.decode_rgb(buf.tobytes())
    assert rgb.dtype == np.uint8 and rgb.max() > 200


def test_exif_orientation_applied():
    img = Image.new("RGB", (80, 40), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 on display
    arr = imaging.decode_rgb(_bytes(img, "JPEG", exif=exif.tobytes()))
    assert arr.shape[:2] == (80, 40)


def test_rejections_have_reasons():
    with pytest.raises(imaging.ImageError) as e:
        imaging.decode_rgb(b"")
    assert e.value.reason == "empty"
    with pytest.raises(imaging.ImageError) as e:
        imaging.decode_rgb(b"<html>not an image</html>")
    assert e.value.reason == "not_an_image"
    good = _bytes(Image.new("RGB", (64, 64)), "JPEG")
    with pytest.raises(imaging.ImageError) as e:
        imaging.decode_rgb(good[: len(good) // 3] + b"\x00" * 10)
    assert e.value.reason in ("undecodable",)
    limits = imaging.ImageLimits(max_side=100, min_side=32, max_aspect=3.0, max_pixels=10_000)
    with pytest.raises(imaging.ImageError) as e:
        imaging.process(_bytes(Image.new("RGB", (200, 200)), "PNG"), limits)
    assert e.value.reason == "too_many_pixels"
    limits = imaging.ImageLimits(max_side=100, min_side=32, max_aspect=3.0)
    with pytest.raises(imaging.ImageError) as e:
        imaging.process(_bytes(Image.new("RGB", (20, 20)), "PNG"), limits)
    assert e.value.reason == "too_small"
    with pytest.raises(imaging.ImageError) as e:
        imaging.process(_bytes(Image.new("RGB", (400, 50)), "PNG"), limits)
    assert e.value.reason == "bad_aspect"


def test_process_resizes_longer_side_and_never_enlarges():
    limits = imaging.ImageLimits(max_side=100)
    jpeg, h, w = imaging.process(_bytes(Image.new("RGB", (300, 150)), "PNG"), limits)
    assert (h, w) == (50, 100)
    assert imaging.decode_rgb(jpeg).shape == (50, 100, 3)
    _, h, w = imaging.process(_bytes(Image.new("RGB", (60, 40)), "PNG"), limits)
    assert (h, w) == (40, 60)


@pytest.mark.parametrize("mode,fmt", [("RGB", "JPEG"), ("L", "PNG"), ("RGBA", "PNG"), ("I;16", "PNG")])
def test_prepare_is_decode_then_resize_pixel_for_pixel(mode, fmt):
    """prepare converts colour after resizing (fewer pixels): it must store exactly what decode-then-resize does."""
    rng = np.random.default_rng(0)
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65535, (300, 420), dtype=np.uint16))
    else:
        img = Image.fromarray(rng.integers(0, 256, (300, 420, 3), dtype=np.uint8)).convert(mode)
    data = _bytes(img, fmt)
    limits = imaging.ImageLimits(max_side=128)
    want = imaging.resize_max_side(imaging.decode_rgb(data), 128)
    got = imaging.prepare(data, limits)
    assert got.shape == want.shape == (91, 128, 3) and got.dtype == np.uint8
    assert np.array_equal(got, want)


def test_masks_roundtrip_exactly():
    mask = np.random.default_rng(0).integers(0, 6, (33, 47)).astype(np.uint8)
    mask[0, 0] = 255
    assert np.array_equal(masks.decode_mask(imaging.encode_png(mask)), mask)
    small = imaging.resize_labels(mask, 10, 12)
    assert set(np.unique(small)) <= set(np.unique(mask))


def _png_with_a_broken_text_chunk(width: int, height: int, body: bytes | None = None) -> bytes:
    """A PNG that PIL refuses to open (a tEXt chunk with a bad CRC) while libpng skips the chunk and decodes it:
    a real black image of width x height, or (body=b'') a header only (what OpenCV sizes its allocation by)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
        crc = zlib.crc32(kind + data) if crc is None else crc
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))  # 8-bit grey
    if body is None:
        body = zlib.compress(b"".join(b"\x00" + bytes(width) for _ in range(height)), 9)
    return b"\x89PNG\r\n\x1a\n" + ihdr + chunk(b"tEXt", b"k\x00v", crc=0) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def test_a_header_pil_cannot_read_is_no_way_past_the_pixel_limit():
    bomb = _png_with_a_broken_text_chunk(3000, 3000)  # 9 M pixels in ~9 KB
    with pytest.raises(UnidentifiedImageError):
        Image.open(io.BytesIO(bomb))  # the hole: no declared size to check before OpenCV decodes it all
    with pytest.raises(imaging.ImageError) as e:
        imaging.decode_rgb(bomb, max_pixels=1_000_000)
    assert e.value.reason == "unreadable_header"
    small = _png_with_a_broken_text_chunk(40, 30)  # too small to hide a bomb: decoded as before
    assert imaging.decode_rgb(small, max_pixels=1_000_000).shape == (30, 40, 3)


def test_opencv_refuses_to_allocate_past_the_hard_cap():
    """A header declaring 900 M pixels with a tiny body passes the byte-size rule (max_pixels set high); OpenCV's
    cap, set by imaging before any decode, refuses it before allocating 2.7 GB. In a fresh interpreter: OpenCV
    reads the cap once per process."""
    import subprocess
    import sys

    code = ("import sys; sys.path.insert(0, 'tests'); from test_imaging import _png_with_a_broken_text_chunk as f; "
            "from inetseg import imaging\n"
            "try:\n    imaging.decode_rgb(f(30000, 30000, body=b'x'), max_pixels=10**12)\n"
            "except imaging.ImageError as e:\n    print(e.reason)")
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_IO_MAX_IMAGE_PIXELS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.strip() == "too_many_pixels", out.stderr[-2000:]
