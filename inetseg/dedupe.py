"""Exact and near-duplicate detection: content hashes, 64-bit perceptual hashes, band search, verdicts.

Pure functions (numpy + OpenCV). The ingest stage stores a SHA-1 of every downloaded body and a DCT
perceptual hash (pHash) of every decoded image, then calls `find_groups` and `verdicts` once over
the whole table on the driver: a hash pair per image is 30 bytes, so a million images fit easily.
"""
from __future__ import annotations

import hashlib

import cv2
import numpy as np

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


class _UnionFind:
    """Disjoint sets over 0..n-1 with path halving (iterative: groups can be long chains)."""

    def __init__(self, n: int):
        self.parent = np.arange(n)

    def find(self, i: int) -> int:
        p = self.parent
        while p[i] != i:
            p[i] = p[p[i]]
            i = p[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def roots(self) -> np.ndarray:
        return np.array([self.find(i) for i in range(len(self.parent))], dtype=np.int64)


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


def find_groups(content: list[str], phashes: np.ndarray, max_distance: int) -> np.ndarray:
    """Group label per row (the smallest row index of its group): rows with the same content hash,
    or with perceptual hashes within `max_distance` bits, fall in one group (transitively).
    max_distance < 0 turns the perceptual test off (exact content only)."""
    n = len(content)
    uf = _UnionFind(n)
    first: dict[str, int] = {}
    for i, c in enumerate(content):
        if c in first:
            uf.union(first[c], i)
        else:
            first[c] = i
    if max_distance >= 0 and n > 1:
        ph = np.asarray(phashes, dtype=np.int64).view(np.uint64)
        uniq, inverse = np.unique(ph, return_inverse=True)
        # Identical pHashes: join each row to the first row holding that value.
        rep = np.full(len(uniq), -1, dtype=np.int64)
        for i, u in enumerate(inverse):
            if rep[u] < 0:
                rep[u] = i
            else:
                uf.union(int(rep[u]), i)
        for a, b in near_pairs(uniq, max_distance):
            uf.union(int(rep[a]), int(rep[b]))
    return uf.roots()


def verdicts(ids: list[str], tags: list[str], groups: np.ndarray,
             ambiguous: str = "drop") -> dict[str, tuple[str, str]]:
    """{id: (status, id it duplicates)} for the rows to set aside; rows not returned stay ok.

    In each group the row with the smallest id is kept (deterministic across runs and shardings).
    A group spanning two or more tags is an ambiguous label: with ambiguous='drop' all its rows go,
    with 'keep' the kept row stays under its own tag and the rest are duplicates.
    """
    if ambiguous not in ("drop", "keep"):
        raise ValueError(f"ambiguous must be drop or keep, not {ambiguous!r}")
    members: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(int(g), []).append(i)
    out: dict[str, tuple[str, str]] = {}
    for rows in members.values():
        if len(rows) < 2:
            continue
        keep = min(rows, key=lambda r: ids[r])
        mixed = len({tags[r] for r in rows}) > 1
        for r in rows:
            if mixed and ambiguous == "drop":
                out[ids[r]] = (AMBIGUOUS, ids[keep])
            elif r != keep:
                out[ids[r]] = (DUPLICATE, ids[keep])
    return out
