"""`inetseg segment`: a tiny random-weight segmenter over real-world photo oddities, under Ray on CPU."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inetseg import config as C
from inetseg import photos
from inetseg.models.segmenter import Segmenter

CLASSES = ["cat", "dog"]
K = len(CLASSES)
# name -> (H, W) the mask must have: the photo's size after EXIF orientation
EXPECTED = {"a": (60, 80), "b": (120, 50), "exif": (90, 40), "grey": (70, 70), "rgba": (40, 100),
            "cmyk": (50, 64), "scan": (48, 48), "sub/a": (33, 47)}


def save_segmenter(folder, meta_extra=None) -> str:
    """A random-weight segmenter saved as the segmenter stage exports one (model.pt + meta.json)."""
    torch.manual_seed(0)
    meta = {"kind": "segmenter", "num_classes": K, "width": 0.25, "aspp_rates": [1, 2], "classes": CLASSES,
            "input_size": 64, **(meta_extra or {})}
    model = Segmenter(K, meta["width"], tuple(meta["aspp_rates"]))
    folder.mkdir(parents=True)
    torch.save(model.state_dict(), folder / "model.pt")
    (folder / "meta.json").write_text(json.dumps({k: v for k, v in meta.items() if v is not None}))
    return str(folder)


def rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def write_photos(root) -> str:
    """One of each oddity: sizes, EXIF rotation, grey, alpha, CMYK, TIFF, a sub-folder, a corrupt file."""
    (root / "sub").mkdir(parents=True)
    Image.fromarray(rgb(60, 80)).save(root / "a.jpg")
    Image.fromarray(rgb(120, 50, 1)).save(root / "b.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to view, so 90 wide x 40 high shows 40 x 90
    Image.fromarray(rgb(40, 90, 2)).save(root / "exif.jpg", exif=exif.tobytes())
    Image.fromarray(rgb(70, 70, 3)[:, :, 0]).save(root / "grey.png")  # mode L
    Image.fromarray(np.dstack([rgb(40, 100, 4), np.full((40, 100), 128, np.uint8)])).save(root / "rgba.png")
    Image.fromarray(rgb(50, 64, 5)).convert("CMYK").save(root / "cmyk.jpg")
    Image.fromarray(rgb(48, 48, 6)).save(root / "scan.tif")
    Image.fromarray(rgb(33, 47, 7)).save(root / "sub" / "a.jpg")
    (root / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00garbage" * 20)
    (root / "notes.txt").write_text("not a photo, not listed")
    return str(root)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("segment")
    return save_segmenter(tmp / "run" / "segmenter"), write_photos(tmp / "photos"), tmp


@pytest.fixture(scope="module")
def first(ray_session, setup):
    from inetseg.stages import segment

    model, images, tmp = setup
    cfg = C.SegmentConfig(model=model, images=images, out=str(tmp / "out"), probs=True)
    return cfg, segment.run(cfg)


def read_mask(path) -> Image.Image:
    img = Image.open(path)
    img.load()
    return img


def test_every_photo_gets_a_palette_mask_at_its_own_size(first):
    cfg, summary = first
    out = Path(cfg.out)
    for name, (h, w) in EXPECTED.items():
        mask = read_mask(out / "masks" / f"{name}.png")
        assert mask.mode == "P", name
        ids = np.array(mask)
        assert ids.shape == (h, w), name
        assert ids.min() >= 0 and ids.max() <= K, name
        assert mask.getpalette()[3:6] == [128, 0, 0]  # VOC colour of class 1
        overlay = np.array(Image.open(out / "overlays" / f"{name}.jpg"))
        assert overlay.shape == (h, w, 3), name
        probs = np.load(out / "probs" / f"{name}.npy")
        assert probs.dtype == np.float16 and probs.shape == (K + 1, h, w), name
        assert np.allclose(probs.astype(np.float32).sum(0), 1, atol=1e-2)
        assert (probs.argmax(0) == ids).mean() > 0.99  # the mask is the probabilities' argmax
    assert json.loads((out / "classes.json").read_text()) == CLASSES


def test_a_corrupt_photo_is_a_counted_skip(first):
    cfg, summary = first
    out = Path(cfg.out)
    assert summary["images"] == len(EXPECTED) + 1
    assert summary["segmented"] == len(EXPECTED) and summary["reused"] == 0
    assert summary["failed"] == 1 and summary["failed_by_reason"] == {"undecodable": 1}
    failed = json.loads((out / "failed.json").read_text())
    assert [f["name"] for f in failed] == ["bad"] and failed[0]["reason"] == "undecodable"
    assert not (out / "masks" / "bad.png").exists()
    assert json.loads((out / "summary.json").read_text()) == summary
    assert set(summary["pixel_share"]) == {"background", *CLASSES}
    assert sum(summary["pixel_share"].values()) == pytest.approx(1, abs=1e-4)


def test_rerun_skips_finished_photos_and_no_resume_redoes_them(first):
    from inetseg.stages import segment

    cfg, _ = first
    again = segment.run(cfg)
    assert again["reused"] == len(EXPECTED) and again["segmented"] == 0 and again["failed"] == 1
    names = ["background", *CLASSES]
    assert segment.start_output(cfg, names, resume=True) == set(EXPECTED)
    assert segment.start_output(cfg, names, resume=False) == set()  # --no-resume: every photo again
    changed = C.SegmentConfig(model=cfg.model, images=cfg.images, out=cfg.out, probs=True, input_size=96)
    with pytest.raises(C.ConfigError, match="--no-resume"):
        segment.run(changed)  # a resume must not mix masks of two settings


def test_crf_on_a_single_photo(ray_session, setup):
    from inetseg.stages import segment

    model, images, tmp = setup
    cfg = C.load(C.SegmentConfig, overrides=[f"model={model}", f"images={images}/sub/a.jpg",
                                             f"out={tmp / 'crf'}", "crf=true", "crf_params.iterations=2"])
    summary = segment.run(cfg)
    assert summary["segmented"] == 1 and summary["images"] == 1
    mask = read_mask(tmp / "crf" / "masks" / "a.png")
    assert mask.mode == "P" and np.array(mask).shape == EXPECTED["sub/a"]
    assert np.array(mask).max() <= K
    assert not (tmp / "crf" / "probs").exists()


def cli(*args):
    return subprocess.run([sys.executable, "-m", "inetseg.cli", "segment", *args], capture_output=True,
                          text=True, timeout=120)


def one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("inetseg segment: error:")
    for n in needles:
        assert n in lines[0]


def test_one_line_errors(setup):
    model, images, tmp = setup
    (tmp / "empty" / "deep").mkdir(parents=True)
    (tmp / "nomodel").mkdir()
    one_line_error(cli(f"model={tmp}/missing", f"images={images}", f"out={tmp}/o"), "model=")
    one_line_error(cli(f"model={tmp}/nomodel", f"images={images}", f"out={tmp}/o"), "model.pt")
    one_line_error(cli(f"model={model}", f"images={tmp}/empty", f"out={tmp}/o"), "no photos")


def test_class_names_fall_back_to_the_run(tmp_path):
    from inetseg import shards
    from inetseg.stages.segment import class_names

    model = save_segmenter(tmp_path / "run" / "segmenter", {"classes": None})
    meta = json.loads((tmp_path / "run" / "segmenter" / "meta.json").read_text())
    with pytest.raises(C.ConfigError, match="classes="):
        class_names(C.SegmentConfig(model=model), meta)
    assert class_names(C.SegmentConfig(model=model, classes=["x", "y"]), meta) == ["x", "y"]
    with pytest.raises(C.ConfigError, match="2 classes"):
        class_names(C.SegmentConfig(model=model, classes=["x"]), meta)
    shards.mark_complete(str(tmp_path / "run" / "pseudo"), "fp", {"classes": CLASSES})
    assert class_names(C.SegmentConfig(model=model), meta) == CLASSES


def test_output_names_keep_folders_and_never_collide(tmp_path):
    for rel in ("a.jpg", "a.png", "sub/a.jpg", "out/old.jpg"):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    paths, root = photos.list_photos(str(tmp_path), exclude=str(tmp_path / "out"))
    assert photos.output_stems(paths, root) == ["a.jpg", "a.png", "sub/a"]
    paths, root = photos.list_photos(str(tmp_path / "sub" / "a.jpg"))
    assert photos.output_stems(paths, root) == ["a"]

