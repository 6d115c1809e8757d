"""Online fine-tuning's pure steps (Eqn 11, 12 and the pseudo label through Eqn 9-10) on tiny arrays."""
from __future__ import annotations

import numpy as np

from inetseg import finetune
from inetseg.attention.maps import Method
from inetseg.imaging import PAD_VALUE
from inetseg.schema import IGNORE


def _probs() -> np.ndarray:
    """3 classes + background over a 4 x 4 image: class 2 wins the left half, background the right."""
    p = np.full((4, 4, 4), 0.1, np.float32)
    p[2, :, :2] = 0.7
    p[0, :, 2:] = 0.7
    p[1, 0, 0] = 0.9  # one pixel where class 1 beats the tag
    return p / p.sum(0, keepdims=True)


def test_object_region_is_where_the_tag_is_at_least_as_likely_as_every_class():
    m = finetune.object_region(_probs(), 2)
    expected = np.zeros((4, 4), bool)
    expected[:, :2] = True
    expected[0, 0] = False  # class 1 is likelier there
    assert (m == expected).all()
    tie = np.full((3, 2, 2), 1 / 3, np.float32)
    assert finetune.object_region(tie, 1).all()  # "at least as likely": ties count


def test_masked_image_keeps_only_the_region():
    rgb = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    region = np.zeros((4, 4), bool)
    region[1:3, 1:3] = True
    out = finetune.masked_image(rgb, region)
    assert (out[region] == rgb[region]).all() and (out[~region] == PAD_VALUE).all()
    assert rgb[0, 0, 0] == 0  # the input is untouched


def test_keep_is_strictly_above_mu():
    assert finetune.keep(np.array([0.39, 0.4, 0.41]), 0.4).tolist() == [False, False, True]


def test_pseudo_label_from_the_segmenter_follows_the_trimap():
    yy, xx = np.mgrid[:32, :32]
    prob = np.exp(-((yy - 16) ** 2 + (xx - 16) ** 2) / 60.0).astype(np.float32) * 0.8  # peak 0.8, not 1
    rgb = np.zeros((32, 32, 3), np.uint8)
    mask, att = finetune.pseudo_from_segmenter(prob, rgb, 3, Method(smoothing=False))
    assert att.max() == np.float32(1.0)  # rescaled to a peak of 1 before the trimap's thresholds
    assert mask[16, 16] == 3 and mask[0, 0] == 0 and (mask == IGNORE).any()


def test_region_labels_are_eqn_11s_mask_with_nothing_ignored():
    m = finetune.object_region(_probs(), 2)
    lab = finetune.region_label(m, 2)
    assert lab.dtype == np.uint8 and set(np.unique(lab)) <= {0, 2} and ((lab == 2) == m).all()


def test_held_out_share_is_deterministic_and_about_the_share():
    ids = [f"img{i}" for i in range(4000)]
    held = finetune.held_out(ids, 0.1)
    assert (held == finetune.held_out(ids, 0.1)).all()
    assert 0.08 < held.mean() < 0.12
    assert not finetune.held_out(ids, 0.0).any()
    assert (finetune.held_out(ids, 0.05) <= held).all()  # a smaller share is a subset: same hash, lower cut
