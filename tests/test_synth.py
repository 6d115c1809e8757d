"""The synthetic corpus: deterministic, noisy as configured, parts small, layout as documented."""
import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from inetseg.config import SynthConfig
from inetseg.sources import synth


def cfg(**kw):
    base = dict(num_classes=3, images_per_class=6, test_images=4, image_size=64, seed=1)
    return SynthConfig(**{**base, **kw})


def test_class_names():
    names = synth.class_names(20)
    assert len(set(names)) == 20 and all(n.isascii() and n.islower() and n.isalpha() for n in names)
    with pytest.raises(ValueError):
        synth.class_names(21)


def test_deterministic_by_seed():
    a = synth.render_search_image(cfg(), 2, 3)
    b = synth.render_search_image(cfg(), 2, 3)
    c = synth.render_search_image(cfg(seed=2), 2, 3)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_noise_types_follow_config_and_ground_truth():
    c = cfg(num_classes=4, image_size=64)
    seen = {t: 0 for t in synth.NOISE_TYPES}
    for i in range(300):
        tag = i % 4 + 1
        img, mask, noise, present = synth.render_search_image(c, tag, i)
        seen[noise] += 1
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8
        assert set(np.unique(mask)) <= set(range(5))
        assert present == sorted(int(v) for v in np.unique(mask) if v)
        if noise == "no_object":
            assert not mask.any()
        if noise == "wrong_tag":
            assert tag not in present and present
        if noise == "multi":
            assert tag in present and len(present) >= 2
        if noise in ("clean", "small_or_cut"):
            assert present == [tag]
    shares = {k: v / 300 for k, v in seen.items()}
    assert abs(shares["wrong_tag"] - c.p_wrong_tag) < 0.07
    assert abs(shares["no_object"] - c.p_no_object) < 0.07
    assert abs(shares["multi"] - c.p_multi) < 0.07
    assert shares["clean"] > 0.3


def test_part_is_a_minority_of_the_object():
    rng = np.random.default_rng(0)
    ratios = []
    for k in range(1, 21):
        body, part, _, _ = synth.render_object(rng, 128, k, (64.0, 64.0), 30.0)
        obj = (body | part).sum()
        ratios.append(part.sum() / obj)
    assert 0.04 < np.mean(ratios) < 0.25, ratios


def test_generate_layout_and_resume(tmp_path):
    c = cfg()
    out = tmp_path / "corpus"
    summary = synth.generate(c, str(out), progress=False)
    assert summary["search_images"] == 18
    classes = json.loads((out / "classes.json").read_text())["classes"]
    assert classes == synth.class_names(3)
    for tag in classes:
        assert len(os.listdir(out / "search" / tag)) == 6
    truth = pq.read_table(out / "hidden" / "train_truth.parquet")
    assert truth.num_rows == 18 and set(truth.column_names) >= {"file", "tag", "noise", "present", "mask"}
    assert (out / "search" / truth.column("file")[0].as_py()).exists()
    assert len(os.listdir(out / "test" / "images")) == 4 == len(os.listdir(out / "test" / "masks"))
    probe = out / "search" / classes[0] / os.listdir(out / "search" / classes[0])[0]
    before = probe.stat().st_mtime_ns
    again = synth.generate(c, str(out), progress=False)
    assert again == summary and probe.stat().st_mtime_ns == before
