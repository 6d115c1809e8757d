"""Forward CAM against the explicit sum of Eqn 5; normalisation; the trimap of Eqn 10."""
import numpy as np
import pytest
import torch

from inetseg.attention.cam import class_attention, forward_cam, normalise_map
from inetseg.attention.trimap import trimap
from inetseg.models.classifier import build_classifier, features


def test_cam_is_eqn5():
    torch.manual_seed(0)
    feat, w = torch.randn(2, 5, 3, 4), torch.randn(6, 5)
    labels = torch.tensor([4, 1])
    cam = forward_cam(feat, w, labels)
    for n in range(2):
        for y in range(3):
            for x in range(4):
                explicit = sum(w[labels[n], c] * feat[n, c, y, x] for c in range(5))
                assert torch.isclose(cam[n, y, x], explicit, atol=1e-5)


def test_cam_mean_is_the_logit_without_bias():
    torch.manual_seed(0)
    m = build_classifier(3, 0.25).eval()
    x = torch.randn(2, 3, 64, 64)
    f = features(m, x)
    cam = forward_cam(f["inception5b"], m.fc.weight, torch.tensor([0, 2]))
    logits = f["logits"] - m.fc.bias
    assert torch.allclose(cam.mean((1, 2)), logits[[0, 1], [0, 2]], atol=1e-4)  # Eqn 2-3
    att = class_attention(m, x, torch.tensor([0, 2]), (64, 64))
    assert att.shape == (2, 64, 64) and 0 <= att.min() and att.max() <= 1


def test_normalise():
    m = torch.tensor([[[-1.0, 2.0], [1.0, 0.0]], [[-1.0, -2.0], [0.0, -3.0]]])
    n = normalise_map(m)
    assert torch.allclose(n[0], torch.tensor([[0.0, 1.0], [0.5, 0.0]]))
    assert (n[1] == 0).all()


def test_trimap_regions():
    att = np.array([[0.0, 0.5, 0.51], [0.65, 0.66, 1.0]])
    out = trimap(att, 3, delta_object=0.65, delta_background=0.5)
    assert out.tolist() == [[0, 0, 255], [255, 3, 3]]
    batch = trimap(np.stack([att, att]), np.array([1, 2]), 0.65, 0.5)
    assert batch[0, 1, 2] == 1 and batch[1, 1, 2] == 2
    with pytest.raises(ValueError):
        trimap(att, 1, delta_object=0.4, delta_background=0.5)
