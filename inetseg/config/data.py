"""Configs of the data stages: the synthetic corpus, the Flickr crawl, ingest and the test split."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from inetseg.config.core import check


def check_names(names: list[str], key: str) -> None:
    """Tags and classes become folder names (a crawl's per-tag folders, a source's sub-folders): refuse one that
    would leave its folder (`..`, a path, an absolute path) or that no file system takes."""
    for name in names:
        check(bool(name.strip()) and name not in (".", "..") and not any(c in name for c in "/\\\0")
              and not name.startswith("~"), f"{key}: {name!r} is not a plain name (no '/', '\\', '..', '~')")


@dataclass
class SynthConfig:
    """The offline synthetic noisy 'web search' corpus."""

    out: str = ""  # corpus folder; default: <pipeline out>/corpus
    num_classes: int = 5  # K object classes, 1..20
    images_per_class: int = 300  # search results per tag
    test_images: int = 150  # clean held-out images with GT masks
    heldout_images: int = 0  # extra search results kept back for online fine-tuning (later issue)
    image_size: int = 128  # side of the square images
    seed: int = 0  # everything is deterministic given this
    p_wrong_tag: float = 0.12  # tag names a class that is not in the image
    p_no_object: float = 0.10  # no object at all, clutter only
    p_multi: float = 0.15  # the tagged object plus an object of another class
    p_small_or_cut: float = 0.12  # the tagged object is small or cut by the border

    def validate(self, p: str = "") -> None:
        check(1 <= self.num_classes <= 20, f"{p}num_classes must be in 1..20")
        check(self.images_per_class >= 1, f"{p}images_per_class must be >= 1")
        check(self.image_size >= 48, f"{p}image_size must be >= 48")
        shares = (self.p_wrong_tag, self.p_no_object, self.p_multi, self.p_small_or_cut)
        check(all(0 <= v <= 1 for v in shares) and sum(shares) <= 1,
              f"{p}p_* noise shares must be in [0, 1] and sum to at most 1")


@dataclass
class CrawlConfig:
    """flickr.photos.search per tag through flickrapi, sliced by upload date -> a URL manifest."""

    out: str = ""  # crawl folder: cursor (finished windows) and manifest.parquet
    tags: list[str] = field(default_factory=list)  # one search tag per class, in label order
    text: str = ""  # optional free-text query added to every search
    per_tag: int = 48000  # target photos per tag (paper: ~48k)
    rest_url: str = "https://api.flickr.com/services/rest/"  # a fake-flickr URL for offline runs
    credentials_file: str = ""  # YAML/JSON with api_key / api_secret; else FLICKR_API_KEY / FLICKR_API_SECRET
    license: str = ""  # Flickr license ids, comma-separated; '' = any
    safe_search: int = 1  # 1 = safe
    min_upload_date: int = 1104537600  # 2005-01-01 (unix seconds)
    max_upload_date: int = 0  # 0 = now
    per_page: int = 500  # Flickr's maximum
    max_results_per_query: int = 4000  # Flickr returns no more than this per query: windows are split below it
    calls_per_hour: float = 3600  # rate limit per API key
    max_retries: int = 6  # on 5xx, 429 and time-outs, with exponential backoff and jitter
    backoff_seconds: float = 1.0  # first retry delay; doubles each time
    timeout_seconds: float = 30.0  # per API call
    ambiguous: Literal["drop", "keep"] = "drop"  # a photo found under two tags: drop | keep (first tag wins)

    def validate(self, p: str = "") -> None:
        check(self.per_tag >= 1, f"{p}per_tag must be >= 1")
        check(1 <= self.per_page <= 500, f"{p}per_page must be in 1..500")
        check(self.calls_per_hour > 0, f"{p}calls_per_hour must be > 0")
        check(self.max_results_per_query >= self.per_page, f"{p}max_results_per_query must be >= per_page")
        check_names(self.tags, f"{p}tags")


@dataclass
class IngestConfig:
    """Folder-per-tag images -> validated, resized, re-encoded Parquet image shards."""

    source: str = ""  # folder-per-tag tree (sub-folder name = tag) or a crawl's manifest; default: the run's source
    out: str = ""  # image shard folder; default: <pipeline out>/images
    classes: list[str] = field(default_factory=list)  # tags to keep, in label order; [] = all sub-folders sorted
    max_side: int = 500  # resize so the longer side is at most this (VOC-like)
    min_side: int = 32  # smaller images are rejected as 'too_small'
    max_aspect: float = 4.0  # more elongated images are rejected as 'bad_aspect'
    max_pixels: int = 50_000_000  # decompression-bomb limit on the decoded size
    jpeg_quality: int = 90  # re-encoding quality
    rows_per_shard: int = 1000  # mean rows per shard; a shard is one task, one Parquet file, resumed whole
    files_per_task: int = 64  # files fetched + decoded per batch inside a shard task (one Parquet row group)
    dedupe: bool = True  # set exact (SHA-1) and near (pHash) duplicates aside
    dedupe_max_distance: int = 2  # pHash bits two images may differ by and still be duplicates; -1 = exact only
    ambiguous: Literal["drop", "keep"] = "drop"  # one picture under two tags: drop all copies | keep the first's
    # Downloads (when source is a crawl's URL manifest):
    download_threads: int = 16  # concurrent fetches inside each Ray Data task
    per_host_concurrency: int = 8  # requests in flight per host per task (image hosts answer 429 readily)
    timeout_seconds: float = 20.0  # per request
    download_retries: int = 2  # on 5xx, 429 and network errors, with backoff
    max_bytes: int = 20_000_000  # larger bodies are refused as 'too_large'
    allow_private_hosts: bool = False  # SSRF guard off: only for loopback test servers

    def validate(self, p: str = "") -> None:
        check(self.max_side >= self.min_side >= 1, f"{p}max_side must be >= min_side >= 1")
        check(1 <= self.jpeg_quality <= 100, f"{p}jpeg_quality must be in 1..100")
        check(self.rows_per_shard >= 1 and self.files_per_task >= 1, f"{p}rows_per_shard/files_per_task must be >= 1")
        check(-1 <= self.dedupe_max_distance <= 16, f"{p}dedupe_max_distance must be in -1..16")
        check_names(self.classes, f"{p}classes")


@dataclass
class TestSetConfig:
    """A labelled test folder (images/ + masks/ + classes.json) -> the TEST table the run is scored on."""

    __test__ = False  # a name pytest would otherwise try to collect

    test: str = ""  # folder with images/ and masks/ (same stems; mask values = class ids) and classes.json
    out: str = ""  # TEST table folder; default: <pipeline out>/test
    classes: list[str] = field(default_factory=list)  # names of mask ids 1..K; [] = the folder's classes.json
