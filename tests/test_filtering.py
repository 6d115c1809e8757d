"""Eqn 13-15 on hand-made score tables."""
import numpy as np
import pytest

from inetseg import filtering
from inetseg.filtering import keep_mask, tag_scores


def test_tag_scores_and_ranks():
    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.05, 0.05, 0.9], [1 / 3, 1 / 3, 1 / 3]])
    labels = np.array([1, 3, 1, 2])
    p, r = tag_scores(probs, labels)
    assert np.allclose(p, [0.7, 0.3, 0.05, 1 / 3])
    assert r.tolist() == [1, 2, 2, 1]


def test_rules():
    p = np.array([0.05, 0.1, 0.11, 0.6, 0.61], dtype=np.float32)
    rank = np.array([5, 4, 3, 2, 1])
    assert keep_mask(p, rank, "eqn13", 0.1, 3).tolist() == [False, False, True, True, True]
    assert keep_mask(p, rank, "eqn15", 0.6, 3).tolist() == [False, False, False, False, True]
    assert keep_mask(p, rank, "eqn14", 0.1, 3).tolist() == [False, False, True, True, True]
    assert keep_mask(p, rank, "none", 0.1, 3).all()
    with pytest.raises(ValueError):
        keep_mask(p, rank, "eqn99", 0.1, 3)


def test_top_classes_best_first():
    probs = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]], np.float32)
    assert filtering.top_classes(probs, 2).tolist() == [[2, 3], [1, 3]]
    assert filtering.top_classes(probs).shape == (2, 3)  # k capped at K
