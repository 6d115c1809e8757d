"""Masks in every common encoding come back as exact class ids; anything else is a one-line error."""
import io

import cv2
import numpy as np
import pytest
from PIL import Image

from inetseg import imaging, masks, viz

IDS = np.array([[0, 1, 2, 4], [15, 255, 0, 20]], np.uint8)


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_voc_palette_png_gives_the_indices():
    img = Image.fromarray(IDS)
    img.putpalette(viz.palette().tobytes())
    assert img.mode == "P"
    out = masks.decode_mask(_png(img))
    assert out.dtype == np.uint8 and np.array_equal(out, IDS)


def test_palette_written_by_us_reads_back_with_voc_colours():
    data = masks.encode_palette_png(IDS)
    img = Image.open(io.BytesIO(data))
    assert img.mode == "P"
    assert np.array_equal(np.array(img.convert("RGB")), viz.colorize(IDS))  # what a viewer shows
    assert np.array_equal(masks.decode_mask(data), IDS)
    with pytest.raises(ValueError):
        masks.encode_palette_png(IDS.astype(np.int32))


def test_grey_8_and_16_bit():
    assert np.array_equal(masks.decode_mask(_png(Image.fromarray(IDS))), IDS)
    ok, buf = cv2.imencode(".png", IDS.astype(np.uint16))
    assert ok and Image.open(io.BytesIO(buf.tobytes())).mode.startswith("I")
    assert np.array_equal(masks.decode_mask(buf.tobytes()), IDS)
    ok, buf = cv2.imencode(".png", np.array([[0, 300]], np.uint16))
    with pytest.raises(masks.MaskError, match=r"mask big\.png: .*300"):
        masks.decode_mask(buf.tobytes(), "big.png")


def test_pipeline_masks_decode_unchanged():
    mask = np.random.default_rng(0).integers(0, 6, (33, 47)).astype(np.uint8)
    mask[0, 0] = 255
    assert np.array_equal(masks.decode_mask(imaging.encode_png(mask)), mask)


def test_rgb_colour_coded_through_the_voc_map():
    rgb = viz.colorize(IDS)
    assert np.array_equal(masks.decode_mask(_png(Image.fromarray(rgb))), IDS)
    rgba = np.dstack([rgb, np.full(IDS.shape, 255, np.uint8)])
    assert np.array_equal(masks.decode_mask(_png(Image.fromarray(rgba))), IDS)


def test_grey_saved_as_rgb_reads_as_grey():
    grey = np.array([[0, 1, 2], [3, 255, 9]], np.uint8)
    assert np.array_equal(masks.decode_mask(_png(Image.fromarray(np.dstack([grey] * 3)))), grey)
    both = np.array([[0, 128]], np.uint8)  # grey 128 or VOC's (128,128,128) = car: no guessing
    with pytest.raises(masks.MaskError, match="ambiguous"):
        masks.decode_mask(_png(Image.fromarray(np.dstack([both] * 3))), "g.png")


def test_unknown_colour_is_an_error_naming_the_file():
    rgb = viz.colorize(IDS)
    rgb[1, 2] = (1, 2, 3)
    with pytest.raises(masks.MaskError) as e:
        masks.decode_mask(_png(Image.fromarray(rgb)), "masks/x.png")
    msg = str(e.value)
    assert "masks/x.png" in msg and "(1, 2, 3)" in msg and "row 1, col 2" in msg and "\n" not in msg
    assert isinstance(e.value, ValueError)


@pytest.mark.parametrize("data, needle", [
    (b"not an image at all", "undecodable"),
    (b"", "undecodable"),
    ("jpeg", "lossy"),
    ("cmyk", "mode CMYK"),
])
def test_other_inputs_are_errors(data, needle):
    if data == "jpeg":
        buf = io.BytesIO()
        Image.fromarray(IDS).save(buf, format="JPEG")
        data = buf.getvalue()
    elif data == "cmyk":
        buf = io.BytesIO()
        Image.new("CMYK", (4, 4)).save(buf, format="TIFF")
        data = buf.getvalue()
    with pytest.raises(masks.MaskError, match=needle) as e:
        masks.decode_mask(data, "m.png")
    assert str(e.value).startswith("mask m.png: ")
