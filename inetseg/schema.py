"""The pyarrow schema of every table that crosses a stage boundary, in one place.

Conventions: images are encoded bytes (JPEG for photos, PNG for label maps), so shards stay small
and any tool can read them; label maps use 0 = background, 1..K = the classes in `classes.json`
order, 255 = ignore. A failed row is data (`status` != 'ok', `error` says why), never a crash.
"""
from __future__ import annotations

import io

import numpy as np
import pyarrow as pa

IGNORE = 255  # label value that losses and metrics skip
STATUS_OK = "ok"

# crawl -> ingest: one row per photo found.
MANIFEST = pa.schema([
    ("photo_id", pa.string()),
    ("tag", pa.string()),         # the search tag that found it
    ("url", pa.string()),         # the largest of url_z / url_c / url_m offered
    ("owner", pa.string()),
    ("license", pa.string()),
    ("date_upload", pa.int64()),  # unix seconds
    ("ambiguous", pa.bool_()),    # also found under another tag
])

# ingest -> classifier / filter: one row per input file, failures included.
IMAGES = pa.schema([
    ("id", pa.string()),          # stable id: hash of the source location
    ("tag", pa.string()),         # the search tag the image came with (noisy label)
    ("label", pa.int16()),        # 1..K index of `tag` in classes.json
    ("source", pa.string()),      # where the bytes came from (path or URL)
    ("status", pa.string()),      # 'ok' or a failure reason (undecodable, too_small, ...)
    ("error", pa.string()),       # human-readable detail for failed rows, '' when ok
    ("image", pa.binary()),       # re-encoded JPEG; null when status != ok
    ("height", pa.int32()),
    ("width", pa.int32()),
    ("sha1", pa.string()),        # SHA-1 of the fetched bytes (exact duplicates); null if never read
    ("phash", pa.int64()),        # 64-bit DCT perceptual hash of the stored image (near duplicates)
])

# ingest: images set aside by de-duplication (the shards keep them; readers skip these ids).
DUPLICATES = pa.schema([
    ("id", pa.string()),
    ("status", pa.string()),      # 'duplicate' or 'ambiguous'
    ("dup_of", pa.string()),      # the id of the row kept for the group
])

# filter: the classifier's opinion of every ok image.
SCORES = pa.schema([
    ("id", pa.string()),
    ("tag", pa.string()),
    ("label", pa.int16()),
    ("p_tag", pa.float32()),                 # P(tag | image), Eqn 13 / 15
    ("tag_rank", pa.int16()),                # 1 = the tag is the top class, Eqn 14
    ("probs", pa.list_(pa.float32())),       # softmax over the K classes (index 0 = class 1)
    ("top_k", pa.list_(pa.int16())),         # the 5 (or K) most probable classes, 1..K, best first
    ("kept", pa.bool_()),
    ("round", pa.int8()),
])

# attention -> segmenter: pseudo labels, Eqn 10.
PSEUDO = pa.schema([
    ("id", pa.string()),
    ("tag", pa.string()),
    ("label", pa.int16()),
    ("image", pa.binary()),       # JPEG, as in IMAGES
    ("mask", pa.binary()),        # PNG uint8: 0 background, label = object, 255 ignore
    ("attention", pa.binary()),   # PNG uint8: the normalised attention map * 255 (for inspection)
    ("height", pa.int32()),
    ("width", pa.int32()),
    ("ignored", pa.float32()),    # share of 255 pixels
    ("foreground", pa.float32()), # share of object pixels
])

# finetune: every held-out image the segmenter labelled, with Eqn 12's verdict (PSEUDO's rows + two columns).
RELABELLED = pa.schema([*PSEUDO, ("p_tag", pa.float32()), ("kept", pa.bool_())])

# test split: clean images with ground-truth masks (never used for training).
TEST = pa.schema([
    ("id", pa.string()),
    ("image", pa.binary()),       # JPEG or PNG
    ("mask", pa.binary()),        # PNG uint8 class ids, 255 = void
    ("height", pa.int32()),
    ("width", pa.int32()),
])

# predict / crf -> evaluate. Rows carry their image and ground truth (when known), so CRF and
# evaluation stream over one table instead of joining.
PREDICTIONS = pa.schema([
    ("id", pa.string()),
    ("image", pa.binary()),       # the input image as stored in TEST
    ("gt", pa.binary()),          # PNG ground truth from TEST; null for unlabelled inputs
    ("pred", pa.binary()),        # PNG uint8 class ids at the image's size
    ("probs", pa.binary()),       # .npy float16 (K+1, h, w) softmax at the image's size; null after CRF
    ("height", pa.int32()),
    ("width", pa.int32()),
])



def encode_probs(probs: np.ndarray) -> bytes:
    """The PREDICTIONS probs column: a (K+1, h, w) array as .npy bytes."""
    buf = io.BytesIO()
    np.save(buf, probs, allow_pickle=False)
    return buf.getvalue()


def decode_probs(data: bytes) -> np.ndarray:
    """The array encode_probs stored."""
    return np.load(io.BytesIO(data), allow_pickle=False)
