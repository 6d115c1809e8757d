"""Forward CAM against the explicit sum of Eqn 5; normalisation; the trimap of Eqn 10."""
import numpy as np
import pytest
import torch

from inetseg.attention.cam import forward_cam, normalise_map, upsample
from inetseg.attention.trimap import trimap
from inetseg.models.classifier import build_classifier


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
    f = m.forward_features(x)
    cam = forward_cam(f["inception5b"], m.fc.weight, torch.tensor([0, 2]))
    logits = f["logits"] - m.fc.bias
    assert torch.allclose(cam.mean((1, 2)), logits[[0, 1], [0, 2]], atol=1e-4)  # Eqn 2-3
    att = upsample(normalise_map(cam.detach()), (64, 64))  # the CAM part of Eqn 8, at image size
    assert att.shape == (2, 64, 64) and 0 <= att.min() and att.max() <= 1 + 1e-6


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


def test_segment_smoothing_is_eqn9():
    from inetseg.attention.smoothing import smooth

    att = np.array([[0.0, 1.0, 0.2], [0.4, 0.6, 0.2]], np.float32)
    seg = np.array([[0, 0, 1], [0, 2, 1]])
    out = smooth(att, seg)
    # Eqn 9 explicitly: each pixel gets the mean of A over its segment.
    for y in range(2):
        for x in range(3):
            s = seg[y, x]
            assert out[y, x] == pytest.approx(att[seg == s].mean(), abs=1e-6)
    with pytest.raises(ValueError):
        smooth(att, seg[:, :2])


def test_segments_follow_colour_edges():
    from inetseg.attention.smoothing import segments

    img = np.zeros((40, 40, 3), np.uint8)
    img[:, 20:] = (200, 40, 40)  # two flat halves
    seg = segments(img, scale=100, sigma=0.5, min_size=10)
    left, right = set(np.unique(seg[:, :18]).tolist()), set(np.unique(seg[:, 22:]).tolist())
    assert not left & right  # no segment crosses the colour edge
    assert len(left) == 1 and len(right) == 1  # a flat region is one segment (the blurred edge gets its own)


def test_fusion_normalises_each_map_and_honours_the_choice():
    from inetseg.attention.fusion import fuse

    cam = torch.tensor([[[0.0, 4.0], [2.0, -1.0]]])
    b2 = torch.tensor([[[1.0, 1.0], [1.0, 3.0]]]) * 1e-3  # probability scale: tiny numbers
    b3 = torch.tensor([[[2.0, 2.0], [2.0, 2.0]]]) * 1e-4
    f = fuse(cam, b2, b3, (2, 2), which="forward")
    assert torch.allclose(f, torch.tensor([[[0.0, 1.0], [0.5, 0.0]]]))
    b = fuse(cam, b2, b3, (2, 2), which="backward")
    assert torch.allclose(b, torch.tensor([[[1 / 3, 1 / 3], [1 / 3, 1.0]]]))
    a = fuse(cam, b2, b3, (2, 2), lambda1=1, lambda2=1)
    raw = torch.tensor([[0 + 1 / 3, 1 + 1 / 3], [0.5 + 1 / 3, 0 + 1.0]])
    assert torch.allclose(a[0], raw / raw.max())
    with pytest.raises(ValueError):
        fuse(cam, b2, b3, (2, 2), which="both")


@pytest.mark.parametrize("maps", ["forward", "backward", "fused"])
@pytest.mark.parametrize("smooth,tri", [(False, False), (True, True)])
def test_attention_maps_and_pseudo_labels_for_every_setting(maps, smooth, tri):
    """The stage's own path (numpy out, image size back) for every ablation row, on a random net."""
    from inetseg.attention.maps import Method, attention_maps, pseudo_label

    torch.manual_seed(0)
    model = build_classifier(3, 0.25).eval()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), rng.integers(0, 256, (64, 40, 3), dtype=np.uint8)]
    method = Method(maps=maps, smoothing=smooth, trimap=tri)
    atts = attention_maps(model, images, np.array([1, 3]), 64, torch.device("cpu"), method)
    for att, im, lab in zip(atts, images, (1, 3)):
        assert att.shape == im.shape[:2] and att.dtype == np.float32
        # each map is divided by its peak; a random net's CAM can be negative everywhere (ReLU: all 0)
        assert 0 <= att.min() and (att.max() == 0 or abs(att.max() - 1) < 1e-6)
        mask, final = pseudo_label(att, im, lab, method)
        assert mask.shape == im.shape[:2]
        assert set(np.unique(mask)) <= ({0, lab, 255} if tri else {0, lab})
        assert (mask == lab).any() == (att.max() > 0)  # the peak is object unless there is no evidence


def test_minmax_cam_keeps_the_contrast_of_a_positive_everywhere_map():
    from inetseg.attention.cam import normalise_minmax
    from inetseg.attention.fusion import fuse

    m = torch.tensor([[[5.0, 6.0], [5.0, 10.0]], [[-1.0, -3.0], [-2.0, -1.0]]])
    n = normalise_minmax(m)
    assert torch.allclose(n[0], torch.tensor([[0.0, 0.2], [0.0, 1.0]]))
    assert torch.allclose(n[1], torch.tensor([[1.0, 0.0], [0.5, 1.0]]))
    assert (normalise_map(m)[0] > 0.49).all()  # max-only: the flat map is object everywhere at 0.5
    b = torch.zeros(2, 2, 2)
    f = fuse(m, b, b, (2, 2), which="forward", cam_norm="minmax")
    assert torch.allclose(f, n)
    with pytest.raises(ValueError, match="cam_norm"):
        fuse(m, b, b, (2, 2), cam_norm="mean")


def test_boundary_objectness_marks_a_framed_object_and_not_its_background():
    from inetseg.attention.objectness import boundary_objectness
    from inetseg.attention.smoothing import segments

    rng = np.random.default_rng(0)
    img = np.clip(rng.normal(90, 3, (80, 100, 3)), 0, 255).astype(np.uint8)  # a plain, slightly noisy wall
    img[25:55, 35:70] = (200, 60, 40)  # the object, in the middle
    seg = segments(img, 100, 0.8, 20)
    obj = boundary_objectness(img, seg)
    assert obj.shape == (80, 100) and obj.dtype == np.float32
    assert obj[40, 50] > 0.5 and obj[2, 2] < 0.1 and obj[78, 98] < 0.1
    assert float(boundary_objectness(img, np.zeros((80, 100), np.int32)).max()) == 0.0  # one segment: nothing


def test_objectness_weight_moves_the_pseudo_label_onto_the_object():
    from inetseg.attention.maps import Method, pseudo_label

    rng = np.random.default_rng(1)
    img = np.clip(rng.normal(90, 3, (64, 64, 3)), 0, 255).astype(np.uint8)
    img[20:44, 20:44] = (30, 160, 220)
    att = np.zeros((64, 64), np.float32)
    att[:6, :] = 1.0  # attention on the context at the top, as a weak classifier's often is
    paper, _ = pseudo_label(att, img, 2, Method())
    fused, _ = pseudo_label(att, img, 2, Method(objectness=1.0))
    assert paper[32, 32] == 0 and fused[32, 32] == 2
    assert Method().objectness == 0.0  # the paper's method unless asked
