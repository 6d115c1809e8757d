"""Flickr crawler: flickr.photos.search per tag through flickrapi, sliced by upload date, resumable.

Flickr returns at most 4000 results per query, so each tag's date range is split in two while a
window reports more than that. Each finished window is written atomically under
`out/windows/<tag>/`, and each split is recorded, so a killed crawl resumes without re-asking
finished windows. The manifest is the union of the windows, de-duplicated, with photos found
under two tags flagged ambiguous. No Ray here: the crawl is bound by one key's rate limit.
"""
from __future__ import annotations

import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from inetseg import schema, shards, storage
from inetseg.config import ConfigError, CrawlConfig

log = logging.getLogger("inetseg")
URL_KEYS = ("url_z", "url_c", "url_m")  # largest first: 640, 800 px ... 500 px (we take z before c:
# VOC-like ~500 px images are what ingest keeps; url_c is used only when z is missing)
EXTRAS = "url_z,url_c,url_m,owner_name,license,date_upload"


class RateLimiter:
    """A token bucket shared by threads: at most `per_hour` calls per hour, small bursts allowed."""

    def __init__(self, per_hour: float, burst: int = 5, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.rate = per_hour / 3600.0
        self.capacity = float(burst)
        self.tokens = float(burst)
        self.clock, self.sleep = clock, sleep
        self.last = clock()
        self.lock = threading.Lock()

    def acquire(self) -> None:
        while True:
            with self.lock:
                now = self.clock()
                self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
                self.last = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                wait = (1 - self.tokens) / self.rate
            self.sleep(wait)


def credentials(cfg: CrawlConfig) -> tuple[str, str]:
    """(key, secret) from cfg.credentials_file or FLICKR_API_KEY / FLICKR_API_SECRET; never logged."""
    if cfg.credentials_file:
        if not storage.exists(cfg.credentials_file):
            raise ConfigError(f"credentials file not found: {cfg.credentials_file}")
        import yaml

        data = yaml.safe_load(storage.read_text(cfg.credentials_file)) or {}
        key, secret = data.get("api_key"), data.get("api_secret")
        if not key or not secret:
            raise ConfigError(f"credentials file {cfg.credentials_file} needs api_key and api_secret")
        return str(key), str(secret)
    key, secret = os.environ.get("FLICKR_API_KEY"), os.environ.get("FLICKR_API_SECRET")
    if not key or not secret:
        raise ConfigError("Flickr credentials missing: set FLICKR_API_KEY and FLICKR_API_SECRET "
                          "or credentials_file=PATH")
    return key, secret


def _retryable(err: Exception) -> bool:
    """5xx, 429 and network time-outs are worth retrying; Flickr's own 'stat=fail' answers are not."""
    import requests

    if isinstance(err, (requests.Timeout, requests.ConnectionError)):
        return True
    m = re.search(r"Status code (\d+)", str(err))
    return bool(m) and (int(m.group(1)) == 429 or int(m.group(1)) >= 500)


class Searcher:
    """flickr.photos.search with rate limiting and retries (exponential backoff with jitter)."""

    def __init__(self, cfg: CrawlConfig, sleep: Callable[[float], None] = time.sleep):
        import flickrapi

        key, secret = credentials(cfg)
        self.api = flickrapi.FlickrAPI(key, secret, format="parsed-json", store_token=False, cache=False,
                                       timeout=cfg.timeout_seconds)
        self.api.REST_URL = cfg.rest_url  # the real Flickr by default, a fake one offline
        self.cfg, self.sleep = cfg, sleep
        self.limiter = RateLimiter(cfg.calls_per_hour, sleep=sleep)
        self.calls = self.retries = 0

    def search(self, tag: str, lo: int, hi: int, page: int) -> dict:
        """One page of results for `tag` uploaded in [lo, hi]."""
        params: dict[str, Any] = {"tags": tag, "min_upload_date": lo, "max_upload_date": hi, "page": page,
                                  "per_page": self.cfg.per_page, "extras": EXTRAS, "content_type": 1,
                                  "media": "photos", "safe_search": self.cfg.safe_search, "sort": "date-posted-desc"}
        if self.cfg.text:
            params["text"] = self.cfg.text
        if self.cfg.license:
            params["license"] = self.cfg.license
        for attempt in range(self.cfg.max_retries + 1):
            self.limiter.acquire()
            self.calls += 1
            try:
                return self.api.photos.search(**params)["photos"]
            except Exception as e:  # classified below
                if attempt == self.cfg.max_retries or not _retryable(e):
                    raise RuntimeError(f"flickr.photos.search failed for tag '{tag}': {e}") from None
                self.retries += 1
                delay = self.cfg.backoff_seconds * 2 ** attempt * random.uniform(0.5, 1.5)
                log.warning("flickr: %s; retry %d in %.1fs", str(e).splitlines()[0], attempt + 1, delay)
                self.sleep(delay)
        raise AssertionError("unreachable")


def photo_row(p: dict, tag: str) -> dict | None:
    """A manifest row from one search result, None when no usable URL was offered."""
    url = next((p[k] for k in URL_KEYS if p.get(k)), None)
    if not url:
        return None
    return {"photo_id": str(p["id"]), "tag": tag, "url": url, "owner": str(p.get("owner", "")),
            "license": str(p.get("license", "")), "date_upload": int(p.get("dateupload", 0) or 0),
            "ambiguous": False}


class Cursor:
    """The crawl's checkpoint: finished and split windows per tag, as small files under out/windows."""

    def __init__(self, out: str):
        self.root = storage.join(out, "windows")

    def _path(self, tag: str, lo: int, hi: int, kind: str) -> str:
        return storage.join(self.root, tag, f"{lo}-{hi}.{kind}")

    def done(self, tag: str, lo: int, hi: int) -> bool:
        return storage.exists(self._path(tag, lo, hi, "parquet"))

    def split(self, tag: str, lo: int, hi: int) -> bool:
        return storage.exists(self._path(tag, lo, hi, "split"))

    def mark_split(self, tag: str, lo: int, hi: int, total: int) -> None:
        storage.write_json(self._path(tag, lo, hi, "split"), {"total": total})

    def finish(self, tag: str, lo: int, hi: int, rows: list[dict]) -> None:
        path = self._path(tag, lo, hi, "parquet")
        shards.write_table(pa.Table.from_pylist(rows, schema=schema.MANIFEST), storage.join(self.root, tag),
                           os.path.basename(path))

    def rows(self, tag: str) -> pa.Table:
        files = [f for f in storage.list_files(storage.join(self.root, tag), (".parquet",))]
        if not files:
            return schema.MANIFEST.empty_table()
        return pa.concat_tables([shards.read_table_file(f) for f in files]).cast(schema.MANIFEST)


def crawl_tag(searcher: Searcher, cursor: Cursor, cfg: CrawlConfig, tag: str, hi_default: int,
              progress: Callable[[int], None] | None = None) -> int:
    """Collect up to cfg.per_tag photos for one tag, newest windows first; returns photos found."""
    seen = set(cursor.rows(tag).column("photo_id").to_pylist())
    stack = [(cfg.min_upload_date, cfg.max_upload_date or hi_default)]
    while stack and len(seen) < cfg.per_tag:
        lo, hi = stack.pop()
        if cursor.done(tag, lo, hi):
            continue
        if cursor.split(tag, lo, hi):
            mid = (lo + hi) // 2
            stack += [(lo, mid), (mid + 1, hi)]  # newer half popped first
            continue
        first = searcher.search(tag, lo, hi, 1)
        total = int(first["total"])
        if total > cfg.max_results_per_query and hi - lo > 1:
            cursor.mark_split(tag, lo, hi, total)
            mid = (lo + hi) // 2
            stack += [(lo, mid), (mid + 1, hi)]
            continue
        rows, page = [], first
        pages = min(int(first["pages"]), -(-cfg.max_results_per_query // cfg.per_page))
        for n in range(1, pages + 1):
            if n > 1:
                page = searcher.search(tag, lo, hi, n)
            rows += [r for r in (photo_row(p, tag) for p in page["photo"]) if r]
        unique = list({r["photo_id"]: r for r in rows}.values())
        cursor.finish(tag, lo, hi, unique)
        new = {r["photo_id"] for r in unique} - seen
        seen |= new
        if progress:
            progress(len(new))
    return len(seen)


def build_manifest(cursor: Cursor, tags: list[str], per_tag: int, ambiguous: str) -> tuple[pa.Table, dict]:
    """Union of every tag's windows: duplicates removed, cross-tag photos flagged (and dropped or kept)."""
    tables = [cursor.rows(t) for t in tags]
    first_tag: dict[str, str] = {}
    seen_in: dict[str, set] = {}
    for t, table in zip(tags, tables):
        for pid in table.column("photo_id").to_pylist():
            seen_in.setdefault(pid, set()).add(t)
            first_tag.setdefault(pid, t)
    out_rows, stats = [], {"ambiguous": 0, "per_tag": {}}
    for t, table in zip(tags, tables):
        kept, dup = 0, set()
        for row in sorted(table.to_pylist(), key=lambda r: (-r["date_upload"], r["photo_id"])):
            pid = row["photo_id"]
            if pid in dup or kept >= per_tag:
                continue
            dup.add(pid)
            row["ambiguous"] = len(seen_in[pid]) > 1
            if row["ambiguous"] and (ambiguous == "drop" or first_tag[pid] != t):
                continue
            out_rows.append(row)
            kept += 1
        stats["per_tag"][t] = kept
    stats["ambiguous"] = sum(1 for v in seen_in.values() if len(v) > 1)
    return pa.Table.from_pylist(out_rows, schema=schema.MANIFEST), stats


def crawl(cfg: CrawlConfig, progress: bool = True, sleep: Callable[[float], None] = time.sleep) -> dict:
    """Crawl every tag into cfg.out; resumable; writes manifest.parquet and returns its stats."""
    if not cfg.out:
        raise ConfigError("crawl needs out=DIR")
    if not cfg.tags:
        raise ConfigError("crawl needs tags=a,b,c")
    from inetseg.progress import bar as progress_bar

    searcher = Searcher(cfg, sleep=sleep)
    cursor = Cursor(cfg.out)
    # 'Now' is fixed at the first start: a resumed crawl must cut the same date windows.
    state_path = storage.join(cfg.out, "cursor.json")
    state = storage.read_json(state_path) if storage.exists(state_path) else {}
    if state.get("tags") not in (None, list(cfg.tags)):
        log.warning("crawl: tags changed since the crawl in %s started; finished windows are still reused", cfg.out)
    hi_default = int(state.get("max_upload_date") or time.time())
    storage.write_json(state_path, {"max_upload_date": hi_default, "tags": list(cfg.tags)})
    t0 = time.time()
    with progress_bar(cfg.per_tag * len(cfg.tags), "crawl", "photo", enabled=progress) as bar:
        for tag in cfg.tags:
            crawl_tag(searcher, cursor, cfg, tag, hi_default, bar.update)
    manifest, stats = build_manifest(cursor, list(cfg.tags), cfg.per_tag, cfg.ambiguous)
    shards.write_table(manifest, cfg.out, "manifest.parquet")
    meta = {"photos": manifest.num_rows, "calls": searcher.calls, "retries": searcher.retries,
            "seconds": round(time.time() - t0, 2), "tags": list(cfg.tags), **stats}
    storage.write_json(storage.join(cfg.out, "crawl.json"), meta)
    return meta


def run(cfg: CrawlConfig, resume: bool = True) -> dict:
    """The stage entry (registry): a crawl always resumes from its cursor; resume=False is not offered for it
    (finished windows cost API calls, which are rate-limited: delete the folder to start over)."""
    return crawl(cfg)
