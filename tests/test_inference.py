"""Inference on whole images: letterboxing, test-time flip, one class per image (pure torch/numpy)."""
import numpy as np
import torch

from inetseg import imaging
from inetseg.inference import predict_logits, predict_probs, single_class


def test_letterbox_keeps_aspect_and_pads_bottom_right():
    img = np.full((30, 60, 3), 200, np.uint8)
    out, (h, w) = imaging.letterbox(img, 40)
    assert out.shape == (40, 40, 3) and (h, w) == (20, 40)
    assert (out[:20] == 200).all() and (out[20:] == imaging.PAD_VALUE).all()
    mask, _ = imaging.letterbox(np.ones((60, 30), np.uint8), 40, 255, 0)
    assert mask.shape == (40, 40) and (mask[:, :20] == 1).all() and (mask[:, 20:] == 255).all()


class _Halves(torch.nn.Module):
    """A fake 2-class segmenter: class 1 on the left half of its input, background on the right."""

    def forward(self, x):
        n, _, s, _ = x.shape
        lg = torch.zeros(n, 2, s, s)
        lg[:, 1, :, : s // 2] = 4.0
        return lg


def test_logits_are_cropped_to_the_image_and_flip_averages_the_mirror():
    images = [np.zeros((20, 40, 3), np.uint8), np.zeros((40, 10, 3), np.uint8)]
    logits = predict_logits(_Halves(), images, 32, torch.device("cpu"))
    assert [tuple(lg.shape) for lg in logits] == [(2, 16, 32), (2, 32, 8)]
    flipped = predict_logits(_Halves(), images, 32, torch.device("cpu"), flip=True)
    # The mirror's object is on the right: averaged, the first image's object logit is 2 everywhere.
    assert torch.allclose(flipped[0][1], torch.full((16, 32), 2.0))
    probs = predict_probs(_Halves(), images, 32, torch.device("cpu"))
    assert [p.shape for p in probs] == [(2, 20, 40), (2, 40, 10)]
    assert np.allclose(sum(probs[0]), 1.0, atol=1e-5)


def test_single_class_gives_all_object_probability_to_the_likeliest_class():
    p = np.zeros((4, 2, 3), np.float32)
    p[0] = 0.4
    p[1] = [[0.5, 0.5, 0.1], [0.1, 0.1, 0.1]]  # class 1: most mass
    p[2] = [[0.1, 0.1, 0.1], [0.3, 0.3, 0.1]]
    p[3] = 1 - p[:3].sum(0)
    out = single_class(p)
    assert np.allclose(out.sum(0), 1.0) and np.allclose(out[0], p[0])
    assert np.allclose(out[1], p[1:].sum(0)) and not out[2:].any()
    # A pixel where no single class beat background is object once the classes pool their probability.
    assert p[:, 1, 0].argmax() == 0 and out[:, 1, 0].argmax() == 1


def test_region_evidence_masks_the_photo_both_ways():
    from inetseg.finetune import masked_image
    from inetseg.inference import region_evidence, tag_probability
    from inetseg.models.classifier import build_classifier

    torch.manual_seed(0)
    net, cpu = build_classifier(3, 0.25).eval(), torch.device("cpu")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (40, 56, 3), dtype=np.uint8) for _ in range(3)]
    labels = np.array([1, 2, 3])
    whole, half = np.ones((40, 56), bool), np.zeros((40, 56), bool)
    half[:, :28] = True
    got = region_evidence(net, images, [whole, half, ~whole], labels, 64, cpu)
    assert got["area"].tolist() == [1.0, 0.5, 0.0]
    plain = tag_probability(net, images, labels, 64, cpu)
    grey = tag_probability(net, [masked_image(im, ~whole) for im in images], labels, 64, cpu)
    assert np.allclose(got["p_in"][[0, 2]], [plain[0], grey[2]], atol=1e-6)  # all of it, or none of it
    assert np.allclose(got["p_out"][[0, 2]], [grey[0], plain[2]], atol=1e-6)
    halves = tag_probability(net, [masked_image(images[1], half), masked_image(images[1], ~half)], labels[[1, 1]], 64,
                             cpu)
    assert np.allclose([got["p_in"][1], got["p_out"][1]], halves, atol=1e-6)
