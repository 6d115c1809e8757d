"""Online fine-tuning (Section 3.2) as pure functions: the segmenter's object region (Eqn 11), the
classifier's check of that region (Eqn 12), and the new pseudo label through Eqn 9 and Eqn 10."""
from __future__ import annotations

import hashlib

import numpy as np

from inetseg.attention import smoothing
from inetseg.attention.maps import Method, pseudo_label
from inetseg.imaging import PAD_VALUE


def object_region(probs: np.ndarray, label: int) -> np.ndarray:
    """Eqn 11: M, the pixels where the tag's class is at least as likely as every other class (background
    included). probs: (K+1) x H x W softmax; label: the tag's id 1..K. Returns an H x W bool map."""
    return probs[label] >= probs.max(axis=0)


def masked_image(rgb: np.ndarray, region: np.ndarray, fill: int = PAD_VALUE) -> np.ndarray:
    """Eqn 12's I (.) M: the photo with everything outside M set to the network's neutral grey (0 after
    normalisation, the value letterboxing pads with), so the classifier sees only the segmented object."""
    out = np.full_like(rgb, fill)
    out[region] = rgb[region]
    return out


def keep(p_tag: np.ndarray, mu: float) -> np.ndarray:
    """Eqn 12's test: the classifier still names the tag from the object region alone, P(tag | I.M) > mu."""
    return np.asarray(p_tag) > mu


def pseudo_from_segmenter(prob_tag: np.ndarray, rgb: np.ndarray, label: int,
                          method: Method) -> tuple[np.ndarray, np.ndarray]:
    """(mask, map): the segmenter's probability of the tag, scaled to a peak of 1, through segment
    smoothing (Eqn 9) and the trimap (Eqn 10) exactly as the attention maps are (method's settings)."""
    return pseudo_label(smoothing.renormalise(np.clip(prob_tag.astype(np.float32), 0, 1)), rgb, label, method)


def region_label(region: np.ndarray, label: int) -> np.ndarray:
    """The object region M of Eqn 11 itself as the pseudo label: the tag inside, background outside, nothing
    ignored (finetune.labels=region). Why an option: a first segmenter that splits its object mass over several
    classes leaves P(tag) low, and the rescaled probability through Eqn 10 then over- or under-segments."""
    return np.where(region, np.uint8(label), np.uint8(0)).astype(np.uint8)


def held_out(ids: list[str], share: float, salt: str = "finetune") -> np.ndarray:
    """The images kept out of the classifier's and the first segmenter's training for fine-tuning: a
    deterministic share by a salted id hash (independent of the classifier's validation slice and folds; another
    salt draws another share, e.g. "val" for tuning's validation images)."""
    cut = int(share * 2**32)
    return np.array([int.from_bytes(hashlib.blake2b(f"{salt}:{i}".encode(), digest_size=4).digest(), "little")
                     < cut for i in ids], dtype=bool)
