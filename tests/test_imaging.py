"""Decode / validate / resize / encode on small generated images, including hostile ones."""
import io

import numpy as np
import pytest
from PIL import Image

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


def test_masks_roundtrip_exactly():
    mask = np.random.default_rng(0).integers(0, 6, (33, 47)).astype(np.uint8)
    mask[0, 0] = 255
    assert np.array_equal(masks.decode_mask(imaging.encode_png(mask)), mask)
    small = imaging.resize_labels(mask, 10, 12)
    assert set(np.unique(small)) <= set(np.unique(mask))
