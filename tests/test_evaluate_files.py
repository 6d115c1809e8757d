"""`inetseg evaluate pred= gt=`: mask folders and a tiny VOC tree, scored against hand-counted IoU."""
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from inetseg import cli, evalsets, imaging, viz
from inetseg.config import EvaluateConfig
from inetseg.stages import evaluate

RUN = ["cat", "dog", "horse"]


def _palette_png(path, ids: np.ndarray) -> None:
    """A VOC-style palette PNG written with PIL: the indices are the ids."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(ids.astype(np.uint8))
    img.putpalette(viz.palette().tobytes())
    img.save(path, format="PNG")


def _grey_png(path, ids: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(imaging.encode_png(ids.astype(np.uint8)))


def _hand_iou(pairs: list[tuple[np.ndarray, np.ndarray]], num_classes: int) -> list[float | None]:
    """Per-class IoU by set counting over the non-void pixels of every (gt, pred) pair."""
    gt = np.concatenate([g.ravel() for g, _ in pairs])
    pred = np.concatenate([p.ravel() for _, p in pairs])
    keep = gt != 255
    gt, pred = gt[keep], pred[keep]
    out = []
    for c in range(num_classes):
        union = ((gt == c) | (pred == c)).sum()
        out.append(((gt == c) & (pred == c)).sum() / union if union else None)
    return out


def _run(tmp_path, **kw) -> dict:
    evaluate.run(EvaluateConfig(out=str(tmp_path / "eval"), **kw))
    return json.loads((tmp_path / "eval" / "metrics.json").read_text())


def _one_line_error(capsys, argv: list[str], *needles: str) -> str:
    assert cli.main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()
             and " INFO " not in line and " WARNING " not in line]
    assert len(lines) == 1 and lines[0].startswith("inetseg evaluate: error: "), lines
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


# ---------------------------------------------------------------- pure parts

def test_voc_lut_maps_names_and_others():
    classes = list(evalsets.VOC_CLASSES)
    assert (classes.index("cat") + 1, classes.index("dog") + 1, classes.index("horse") + 1) == (8, 12, 13)
    lut = evalsets.class_lut(RUN, classes, "background")
    assert (lut[0], lut[8], lut[12], lut[13], lut[15], lut[255]) == (0, 1, 2, 3, 0, 255)
    lut = evalsets.class_lut(RUN, classes, "ignore")
    assert (lut[0], lut[8], lut[15], lut[1], lut[21]) == (0, 1, 255, 255, 255)
    with pytest.raises(evalsets.DataSetError, match="'zebra'"):
        evalsets.class_lut(["cat", "zebra"], classes)


def test_folder_items_and_classes_json(tmp_path):
    _grey_png(tmp_path / "set" / "masks" / "a.png", np.zeros((2, 2)))
    _grey_png(tmp_path / "set" / "masks" / "sub" / "a.png", np.zeros((2, 2)))
    (tmp_path / "set" / "images").mkdir()
    (tmp_path / "set" / "images" / "a.jpg").write_bytes(b"x")
    items = {it.stem: it for it in evalsets.folder_items(str(tmp_path / "set"))}
    assert set(items) == {"a", "sub/a"}
    assert items["a"].image.endswith("images/a.jpg") and items["sub/a"].image is None
    assert evalsets.read_classes(str(tmp_path / "set" / "masks")) is None
    (tmp_path / "set" / "classes.json").write_text(json.dumps({"classes": ["dog", "cat"]}))
    assert evalsets.read_classes(str(tmp_path / "set" / "masks")) == ["dog", "cat"]
    (tmp_path / "set" / "masks" / "classes.json").write_text(json.dumps(["horse"]))
    assert evalsets.read_classes(str(tmp_path / "set" / "masks")) == ["horse"]
    gt = evalsets.open_set(str(tmp_path / "set"), ["horse"])
    assert gt.classes == ["horse"] and len(gt.items) == 2


# ---------------------------------------------------------------- scored end to end

@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    """A tiny VOCdevkit: val = a, b (c only in train); cat=8, dog=12, horse=13, person=15, 255 void."""
    root = tmp_path_factory.mktemp("voc") / "VOCdevkit" / "VOC2012"
    gts = {"a": np.array([[0, 8, 8, 15], [0, 12, 255, 15]]), "b": np.array([[13, 13, 15]]),
           "c": np.array([[8, 8]])}
    for stem, ids in gts.items():
        _palette_png(root / "SegmentationClass" / f"{stem}.png", ids)
        (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "JPEGImages" / f"{stem}.jpg"), np.zeros((*ids.shape, 3), np.uint8))
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("a\nb\n")
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("c\n")
    pred = root.parents[1] / "pred"
    _palette_png(pred / "a.png", np.array([[0, 1, 0, 0], [1, 2, 2, 1]]))
    _grey_png(pred / "b.png", np.array([[3, 0, 3]]))
    (pred / "classes.json").write_text(json.dumps(RUN))
    return root, pred


def test_voc_paths_resolve(voc):
    root, _ = voc
    for given in (root.parent, root):
        assert evalsets.voc_root(str(given)) == str(root)
    items = evalsets.voc_items(str(root))
    assert [it.stem for it in items] == ["a", "b"] and items[0].image.endswith("JPEGImages/a.jpg")
    with pytest.raises(evalsets.DataSetError, match="test.*splits here: train, val"):
        evalsets.voc_items(str(root), "test")


@pytest.mark.parametrize("others, expected, accuracy", [
    # Hand-counted from the fixture (person -> background, or not scored).
    ("background", [2 / 7, 1 / 4, 1.0, 1 / 3], 5 / 10),
    ("ignore", [1 / 4, 1 / 3, 1.0, 1 / 2], 4 / 7),
])
def test_voc_scored_with_the_class_mapping(ray_session, tmp_path, voc, others, expected, accuracy):
    root, pred = voc
    m = _run(tmp_path, pred=str(pred), gt=str(root.parent), others=others)
    assert m["classes"] == ["background", *RUN] and m["images"] == 2 and m["missing"] == 0
    assert list(m["per_class_iou"].values()) == pytest.approx(expected, abs=1e-12)
    assert m["miou"] == pytest.approx(np.mean(expected), abs=1e-12)
    assert m["pixel_accuracy"] == pytest.approx(accuracy, abs=1e-12)


def test_miou_equals_independent_counting(ray_session, tmp_path):
    rng = np.random.default_rng(7)
    pairs = []
    for i, (h, w) in enumerate([(17, 23), (40, 31), (8, 64), (33, 33)]):
        gt = rng.integers(0, 4, (h, w))
        gt[rng.random((h, w)) < 0.1] = 255
        pred = np.where(rng.random((h, w)) < 0.6, gt, rng.integers(0, 4, (h, w)))
        pred[rng.random((h, w)) < 0.05] = 255  # 'no label' predictions: misses for their true class
        stem = f"sub/{i}" if i % 2 else str(i)
        _palette_png(tmp_path / "gt" / "masks" / f"{stem}.png", gt)
        (_palette_png if i < 2 else _grey_png)(tmp_path / "pred" / f"{stem}.png", pred)
        pairs.append((gt, pred))
    m = _run(tmp_path, pred=str(tmp_path / "pred"), gt=str(tmp_path / "gt"), classes=RUN)
    hand = _hand_iou(pairs, 4)
    got = list(m["per_class_iou"].values())
    assert got == pytest.approx(hand, abs=1e-12)
    assert m["miou"] == pytest.approx(float(np.mean(hand)), abs=1e-12)
    assert m["images"] == 4 and np.array(m["confusion"]).shape == (4, 5)
    picture = cv2.imread(str(tmp_path / "eval" / "confusion.png"))
    assert picture is not None and picture.shape[0] > 4 * 40 and picture.shape[1] > 5 * 40


def test_missing_prediction_is_one_line_unless_allowed(ray_session, tmp_path, voc, capsys):
    root, pred = voc
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "a.png").write_bytes((pred / "a.png").read_bytes())
    argv = ["evaluate", f"pred={partial}", f"gt={root}", f"out={tmp_path / 'o'}", "classes=cat,dog,horse"]
    _one_line_error(capsys, argv, "1 of 2", "(first: b)", "allow_missing=true")
    assert cli.main([*argv, "allow_missing=true"]) == 0
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert m["images"] == 1 and m["missing"] == 1


def test_shape_mismatch_is_one_line_naming_the_file(ray_session, tmp_path, voc, capsys):
    root, pred = voc
    bad = tmp_path / "bad"
    (bad / "a.png").parent.mkdir()
    (bad / "a.png").write_bytes((pred / "a.png").read_bytes())
    _grey_png(bad / "b.png", np.zeros((3, 1)))
    argv = ["evaluate", f"pred={bad}", f"gt={root}", f"out={tmp_path / 'o'}", "classes=cat,dog,horse"]
    _one_line_error(capsys, argv, str(bad / "b.png"), "SegmentationClass/b.png")


def test_cli_user_mistakes(ray_session, tmp_path, voc, capsys):
    root, pred = voc
    out = f"out={tmp_path / 'o'}"
    _one_line_error(capsys, ["evaluate", out], "predictions=", "pred=", "gt=")
    _one_line_error(capsys, ["evaluate", f"pred={pred}", f"gt={root}", out, "classes=cat,zebra"], "disagrees")
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "a.png").write_bytes((pred / "a.png").read_bytes())
    _one_line_error(capsys, ["evaluate", f"pred={bare}", f"gt={root}", out], "classes=a,b,c")
    _one_line_error(capsys, ["evaluate", f"pred={bare}", f"gt={root}", out, "classes=cat,zebra"], "'zebra'")
    _one_line_error(capsys, ["evaluate", f"pred={pred}", f"gt={root}", out, "others=maybe"], "others")
    _one_line_error(capsys, ["evaluate", f"pred={pred}", f"gt={tmp_path / 'none'}", out], "gt=")


def test_help_explains_both_forms():
    proc = subprocess.run([sys.executable, "-m", "inetseg.cli", "evaluate", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0
    for needle in ("predictions=TABLE", "pred=DIR gt=DIR_OR_VOC", "others=", "allow_missing", "split"):
        assert needle in proc.stdout
