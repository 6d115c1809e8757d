"""Run a trained segmenter (models.io.load_model) on decoded images: pure torch/numpy, no Ray."""
from __future__ import annotations

import numpy as np
import torch

from inetseg import imaging
from inetseg.train.data import normalise


def predict_logits(model: torch.nn.Module, images: list[np.ndarray], input_size: int,
                   device: torch.device, flip: bool = False) -> list[torch.Tensor]:
    """Per image, logits (K+1) x h x w over the image letterboxed into S = input_size (padding cut off).

    Letterboxed, not squashed: the segmenter trains on aspect-kept crops padded with grey, so a 4:3 photo
    squashed to a square would show it objects of a shape it never saw. flip: also run the mirror image
    and average the logits (the usual test-time flip).
    """
    boxes = [imaging.letterbox(im, input_size) for im in images]
    x = torch.from_numpy(normalise(np.stack([b[0] for b in boxes]))).to(device)
    with torch.no_grad():
        logits = model(x).float()  # N x (K+1) x S x S
        if flip:
            logits = (logits + model(x.flip(3)).float().flip(3)) / 2
    return [lg[:, :h, :w] for lg, (_, (h, w)) in zip(logits, boxes)]


def upsample_probs(logits: torch.Tensor, height: int, width: int) -> np.ndarray:
    """Softmax (K+1) x H x W of one image's (K+1) x h x w logits, at the image's own size."""
    with torch.no_grad():
        lg = torch.nn.functional.interpolate(logits[None], size=(height, width), mode="bilinear",
                                             align_corners=False)[0]
        return torch.softmax(lg, 0).cpu().numpy()


def single_class(probs: np.ndarray) -> np.ndarray:
    """(K+1) x H x W softmax -> the same with all object probability given to the image's one class.

    The class is the one with the most probability mass over the image. Why: every pseudo label holds
    one class (the image's tag), so the segmenter learns one object class per image; an animal split
    into cat and dog pixels scores against both classes. Background keeps its own probability.
    """
    out = np.zeros_like(probs)
    out[0] = probs[0]
    k = 1 + int(probs[1:].sum(axis=(1, 2)).argmax())
    out[k] = probs[1:].sum(0)
    return out


def predict_probs(model: torch.nn.Module, images: list[np.ndarray], input_size: int,
                  device: torch.device, flip: bool = False, one_class: bool = False) -> list[np.ndarray]:
    """Softmax (K+1) x H x W per image at the image's own size (one_class: see single_class)."""
    logits = predict_logits(model, images, input_size, device, flip)
    probs = [upsample_probs(lg, im.shape[0], im.shape[1]) for lg, im in zip(logits, images)]
    return [single_class(p) for p in probs] if one_class else probs


def tag_probability(classifier: torch.nn.Module, images: list[np.ndarray], labels: np.ndarray, input_size: int,
                    device: torch.device) -> np.ndarray:
    """Eqn 12's P(tag): the classifier's softmax probability of each image's tag (labels 1..K), at its input size."""
    from inetseg.train.data import augment_images, to_input

    x = torch.from_numpy(augment_images(images, input_size, augment=False)).to(device)
    with torch.no_grad():
        probs = torch.softmax(classifier(to_input(x)).float(), 1).cpu().numpy()
    return probs[np.arange(len(labels)), np.asarray(labels) - 1]


def region_evidence(classifier: torch.nn.Module, images: list[np.ndarray], regions: list[np.ndarray],
                    labels: np.ndarray, input_size: int, device: torch.device) -> dict[str, np.ndarray]:
    """Per image, the terms of the label-free objective (tuning.evidence_score) for its object region M:
    p_in = P(tag | I.M), p_out = P(tag | I.(1-M)) (Eqn 12's masking, both ways) and area = |M| / |I|."""
    from inetseg.finetune import masked_image

    return {"p_in": tag_probability(classifier, [masked_image(im, m) for im, m in zip(images, regions)], labels,
                                    input_size, device),
            "p_out": tag_probability(classifier, [masked_image(im, ~m) for im, m in zip(images, regions)], labels,
                                     input_size, device),
            "area": np.array([m.mean() for m in regions], dtype=np.float64)}
