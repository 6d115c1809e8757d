"""Exact and near-duplicate detection: content hashes, 64-bit perceptual hashes, band search, verdicts.

Pure functions (numpy, Arrow, OpenCV). The ingest stage stores a SHA-1 of every downloaded body and a DCT
perceptual hash (pHash) of every decoded image, then calls `find_groups` and `verdicts` once over
the whole table on the driver, as arrays (no Python object per image): id, SHA-1 and pHash are ~90 bytes
an image, so a million images take ~100 MB.
"""
from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

DUPLICATE = "duplicate"  # same picture as a kept row of the same tag
AMBIGUOUS = "ambiguous"  # the same picture arrived under two or more tags


def content_hash(data: bytes) -> str:
    """Hex SHA-1 of the raw bytes: identical files, whatever their URL or file name."""
    return hashlib.sha1(data).hexdigest()


def phash(img: np.ndarray) -> int:
    """64-bit DCT perceptual hash (as a signed int64) of an RGB or grey image.

    Grey 32x32 (area-averaged, so scale and JPEG re-encoding barely move it), 2-D DCT, the 8x8
    lowest frequencies, each bit = coefficient above their median (DC term left out of the median,
    since it only carries mean brightness). Robust to resizing and recompression, not to crops.
    """
    grey = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    small = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8].reshape(-1)
    bits = low > np.median(low[1:])
    value = int(np.packbits(bits.astype(np.uint8)).view(">u8")[0])
    return value - (1 << 64) if value >= (1 << 63) else value


def popcount(x: np.ndarray) -> np.ndarray:
    """Set bits per element of a uint64 array."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    b = x.view(np.uint8).reshape(*x.shape, 8)
    return np.unpackbits(b, axis=-1).sum(-1)


def _strings(values) -> pa.Array:
    """One Arrow string array from a list, an Arrow array or a chunked column."""
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks()
    return values if isinstance(values, pa.Array) else pa.array(list(values), type=pa.string())


def _codes(values) -> np.ndarray:
    """Integer code per row of a sequence or Arrow array of strings (equal strings, equal codes)."""
    return np.asarray(pc.dictionary_encode(_strings(values)).indices, dtype=np.int64)


def _first_of(codes: np.ndarray) -> np.ndarray:
    """Per row, the smallest row index holding the same code."""
    first = np.full(int(codes.max()) + 1 if len(codes) else 0, len(codes), dtype=np.int64)
    np.minimum.at(first, codes, np.arange(len(codes), dtype=np.int64))
    return first[codes]


def _components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row 0..n-1, the smallest row index of its connected component under edges a[k] - b[k]."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    smallest = np.full(int(label.max()) + 1, n, dtype=np.int64)
    np.minimum.at(smallest, label, np.arange(n, dtype=np.int64))
    return smallest[label]


def _bands(max_distance: int) -> list[tuple[int, int]]:
    """(shift, bits) of max_distance + 1 disjoint bands covering 64 bits: by pigeonhole, two hashes
    within max_distance bits agree exactly on at least one band."""
    n = max_distance + 1
    widths = [64 // n + (1 if i < 64 % n else 0) for i in range(n)]
    out, shift = [], 0
    for w in widths:
        out.append((shift, w))
        shift += w
    return out


def near_pairs(hashes: np.ndarray, max_distance: int, max_bucket: int = 4096) -> np.ndarray:
    """Index pairs (i < j) of distinct uint64 `hashes` within `max_distance` Hamming bits.

    Multi-index hashing: bucket by each band, compare only inside buckets, vectorised. A bucket
    larger than `max_bucket` (a degenerate band value) is compared in chunks, never skipped.
    """
    h = np.asarray(hashes, dtype=np.uint64)
    if max_distance < 0 or len(h) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    found = []
    for shift, width in _bands(max_distance):
        key = (h >> np.uint64(shift)) & np.uint64((1 << width) - 1)
        order = np.argsort(key, kind="stable")
        sk = key[order]
        starts = np.flatnonzero(np.r_[True, sk[1:] != sk[:-1]])
        ends = np.r_[starts[1:], len(sk)]
        for s, e in zip(starts[(ends - starts) > 1], ends[(ends - starts) > 1]):
            members = order[s:e]
            for c in range(0, len(members), max_bucket):
                rows = members[c:c + max_bucket]
                d = popcount(h[rows][:, None] ^ h[members][None, :])
                ii, jj = np.nonzero(d <= max_distance)
                a, b = rows[ii], members[jj]
                keep = a < b
                if keep.any():
                    found.append(np.stack([a[keep], b[keep]], axis=1))
    if not found:
        return np.zeros((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(found), axis=0)


def find_groups(content, phashes: np.ndarray, max_distance: int) -> np.ndarray:
    """Group label per row (the smallest row index of its group): rows with the same content hash,
    or with perceptual hashes within `max_distance` bits, fall in one group (transitively).
    max_distance < 0 turns the perceptual test off (exact content only). `content`: a list or Arrow array
    of strings; all work is on arrays, no Python object per row (a million rows in seconds)."""
    codes = _codes(content)
    n = len(codes)
    rows = np.arange(n, dtype=np.int64)
    a, b = [rows], [_first_of(codes)]  # each row to the first row with its bytes
    if max_distance >= 0 and n > 1:
        ph = np.asarray(phashes, dtype=np.int64).view(np.uint64)
        uniq, inverse = np.unique(ph, return_inverse=True)
        a.append(rows)
        b.append(_first_of(inverse.reshape(-1)))  # identical pHashes: to the first row holding that value
        rep = np.full(len(uniq), n, dtype=np.int64)
        np.minimum.at(rep, inverse.reshape(-1), rows)
        pairs = near_pairs(uniq, max_distance)
        a.append(rep[pairs[:, 0]])
        b.append(rep[pairs[:, 1]])
    return _components(n, np.concatenate(a), np.concatenate(b)) if n else rows


def verdicts(ids, tags, groups: np.ndarray, ambiguous: str = "drop") -> pa.Table:
    """The rows to set aside as a table (id, status, dup_of), sorted by id; rows not in it stay ok.

    In each group the row with the smallest id is kept (deterministic across runs and shardings).
    A group spanning two or more tags is an ambiguous label: with ambiguous='drop' all its rows go,
    with 'keep' the kept row stays under its own tag and the rest are duplicates. `ids` and `tags`: lists or
    Arrow arrays; vectorized like find_groups.
    """
    if ambiguous not in ("drop", "keep"):
        raise ValueError(f"ambiguous must be drop or keep, not {ambiguous!r}")
    id_arr = _strings(ids)
    groups = np.asarray(groups, dtype=np.int64)
    n = len(groups)
    rows = np.nonzero(np.bincount(groups, minlength=n)[groups] >= 2)[0] if n else groups
    g = groups[rows]
    order = np.asarray(pc.sort_indices(id_arr), dtype=np.int64)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n, dtype=np.int64)
    best = np.full(n, n, dtype=np.int64)
    np.minimum.at(best, g, rank[rows])
    keep = order[best[g]] if len(rows) else rows  # the group's smallest id
    tag = _codes(tags) if n else groups
    low, high = np.full(n, n, dtype=np.int64), np.full(n, -1, dtype=np.int64)
    np.minimum.at(low, g, tag[rows])
    np.maximum.at(high, g, tag[rows])
    dropped = (low[g] != high[g]) & (ambiguous == "drop")
    chosen = dropped | (rows != keep)
    out = pa.table({"id": id_arr.take(pa.array(rows[chosen])),
                    "status": pa.array(np.where(dropped[chosen], AMBIGUOUS, DUPLICATE).tolist(), type=pa.string()),
                    "dup_of": id_arr.take(pa.array(keep[chosen]))})
    return out.sort_by("id")
