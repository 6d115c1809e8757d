"""An offline Flickr: a loopback HTTP server answering flickr.photos.search and serving image bytes.

Backed by a folder-per-tag corpus (e.g. the synthetic one). It behaves like Flickr where the crawler
cares: at most `max_results` results reachable per query (pages past it repeat the last page, as
Flickr does past 4000) while `total` reports the true count; upload dates spread over years so the
crawler must slice by date; Flickr-style JSON. Fault knobs make it misbehave on purpose.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from inetseg import storage

EPOCH_START = 1262304000  # 2010-01-01, first synthetic upload date
EPOCH_SPAN = 14 * 365 * 86400  # uploads spread over 14 years


class _Server(ThreadingHTTPServer):
    """A threaded server with a listen backlog for many concurrent downloaders (the default is 5)."""

    request_queue_size = 256
    daemon_threads = True


@dataclass
class Faults:
    """How badly the server behaves (probabilities per request unless stated)."""

    error_rate: float = 0.0       # HTTP 500
    rate_limit_rate: float = 0.0  # start a burst of HTTP 429
    burst: int = 3                # 429s in a row once a burst starts
    latency: float = 0.0          # seconds added to every response
    truncate_rate: float = 0.0    # image bodies cut in half
    wrong_type_rate: float = 0.0  # image served as text/html
    garbage_rate: float = 0.0     # non-image bytes served as image/jpeg
    oversized_rate: float = 0.0   # a huge (decompression-bomb-like) PNG instead of the image
    fail_after: int = 0           # > 0: every API call after this many answers HTTP 400 (a dying crawl)


@dataclass(frozen=True)
class Photo:
    id: str
    tag: str
    path: str
    owner: str
    license: int
    dateupload: int


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.sha1(text.encode()).digest()[:8], "big")


def load_photos(corpus_search: str) -> list[Photo]:
    """Every image of a folder-per-tag tree as a 'Flickr photo' with deterministic metadata."""
    photos = []
    for tag in storage.list_dirs(corpus_search):
        for path in storage.list_files(storage.join(corpus_search, tag)):
            # The id follows the bytes: the same picture under two tags is one photo with two tags.
            h = _stable_int(hashlib.sha1(storage.read_bytes(path)).hexdigest())
            photos.append(Photo(id=str(10**10 + h % 10**10), tag=tag, path=path, owner=f"{h % 997}@N0{h % 7}",
                                license=int(h % 10), dateupload=EPOCH_START + h % EPOCH_SPAN))
    return photos


class FakeFlickr:
    """`with FakeFlickr(corpus) as f: f.rest_url` — a running server on 127.0.0.1 (port 0 = any free port)."""

    def __init__(self, corpus_search: str, host: str = "127.0.0.1", port: int = 0, faults: Faults | None = None,
                 max_results: int = 4000, seed: int = 0):
        self.photos = load_photos(corpus_search)
        self.by_id = {p.id: p for p in self.photos}
        self.faults = faults or Faults()
        self.max_results = max_results
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.burst_left = 0
        self.calls: dict[str, int] = {}
        self.server = _Server((host, port), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def rest_url(self) -> str:
        return self.base_url + "/services/rest/"

    def __enter__(self) -> FakeFlickr:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _count(self, key: str) -> None:
        with self.lock:
            self.calls[key] = self.calls.get(key, 0) + 1

    def _fault(self) -> int | None:
        """An HTTP status to fail with, or None."""
        f = self.faults
        with self.lock:
            if self.burst_left > 0:
                self.burst_left -= 1
                return 429
            if self.rng.random() < f.rate_limit_rate:
                self.burst_left = max(0, f.burst - 1)
                return 429
            if self.rng.random() < f.error_rate:
                return 500
        return None

    def search(self, params: dict[str, str]) -> dict:
        """flickr.photos.search over tags and upload dates, Flickr's paging and result cap included."""
        tags = {t.strip() for t in params.get("tags", "").split(",") if t.strip()}
        lo = int(params.get("min_upload_date", 0))
        hi = int(params.get("max_upload_date", 2**40))
        per_page = max(1, min(500, int(params.get("per_page", 100))))
        page = max(1, int(params.get("page", 1)))
        hits = sorted((p for p in self.photos if (not tags or p.tag in tags) and lo <= p.dateupload <= hi),
                      key=lambda p: (-p.dateupload, p.id))  # Flickr's default: newest first
        total = len(hits)
        reachable = hits[: self.max_results]
        pages = max(1, -(-len(reachable) // per_page))
        page = min(page, pages)  # past the cap Flickr repeats the last page
        chunk = reachable[(page - 1) * per_page: page * per_page]
        return {"photos": {"page": page, "pages": max(1, -(-total // per_page)), "perpage": per_page,
                           "total": total, "photo": [self._photo_json(p) for p in chunk]}, "stat": "ok"}

    def _photo_json(self, p: Photo) -> dict:
        rel = urllib.parse.quote(f"{p.tag}/{os.path.basename(p.path)}")
        return {"id": p.id, "owner": p.owner, "secret": "s" + p.id[-6:], "server": "1", "farm": 1,
                "title": os.path.basename(p.path), "ispublic": 1, "license": str(p.license),
                "dateupload": str(p.dateupload), "url_m": f"{self.base_url}/img/{rel}", "height_m": 128,
                "width_m": 128}

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet: tests and benchmarks make thousands of calls
                pass

            def _send(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _api(self, params: dict[str, str]) -> None:
                fake._count("api")
                if fake.faults.fail_after and fake.calls["api"] > fake.faults.fail_after:
                    return self._send(400, b"stat=fail", "text/plain")
                if fake.faults.latency:
                    time.sleep(fake.faults.latency)
                status = fake._fault()
                if status:
                    return self._send(status, b"stat=fail&code=%d" % status, "text/plain")
                if params.get("method") != "flickr.photos.search":
                    body = {"stat": "fail", "code": 112, "message": f"Method \"{params.get('method')}\" not found"}
                else:
                    body = fake.search(params)
                self._send(200, json.dumps(body).encode(), "application/json")

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length", 0))
                params = dict(urllib.parse.parse_qsl(self.rfile.read(n).decode()))
                self._api(params)

            def do_GET(self) -> None:
                url = urllib.parse.urlparse(self.path)
                if url.path.startswith("/services/rest"):
                    return self._api(dict(urllib.parse.parse_qsl(url.query)))
                if not url.path.startswith("/img/"):
                    return self._send(404, b"not found", "text/plain")
                fake._count("img")
                self._image(urllib.parse.unquote(url.path[len("/img/"):]))

            def _image(self, rel: str) -> None:
                f = fake.faults
                status = fake._fault()
                if status:
                    return self._send(status, b"error", "text/plain")
                tag, name = rel.split("/", 1)
                matches = [p for p in fake.photos if p.tag == tag and os.path.basename(p.path) == name]
                if not matches:
                    return self._send(404, b"not found", "text/plain")
                data = storage.read_bytes(matches[0].path)
                r = fake.rng.random()
                if r < f.truncate_rate:
                    return self._send(200, data[: len(data) // 2], "image/jpeg")
                r -= f.truncate_rate
                if r < f.wrong_type_rate:
                    return self._send(200, data, "text/html")
                r -= f.wrong_type_rate
                if r < f.garbage_rate:
                    return self._send(200, b"<html>gone</html>" * 8, "image/jpeg")
                r -= f.garbage_rate
                if r < f.oversized_rate:
                    return self._send(200, _bomb_png(), "image/png")
                self._send(200, data, "image/jpeg")

        return Handler


_BOMB: bytes | None = None


def _bomb_png() -> bytes:
    """A small PNG that declares 20000 x 20000 pixels (decodes to 1.2 GB): ingest must refuse it."""
    global _BOMB
    if _BOMB is None:
        import zlib

        w = h = 20000
        raw = zlib.compress(b"\x00" * (w * 3 + 1) * 64, 9)  # only 64 rows of data: truncated on purpose

        def chunk(kind: bytes, data: bytes) -> bytes:
            return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

        ihdr = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
        _BOMB = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")
    return _BOMB
