"""HTTP image download for ingest: SSRF guard, size/type/magic checks, retries, per-host limits (no Ray)."""
from __future__ import annotations

import ipaddress
import random
import socket
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import requests

from inetseg.imaging import ImageError, sniff

_METADATA_HOSTS = {"169.254.169.254", "metadata.google.internal", "100.100.100.200", "fd00:ec2::254"}


@dataclass(frozen=True)
class FetchPolicy:
    """What a download may do."""

    timeout: float = 20.0
    max_bytes: int = 20_000_000
    retries: int = 2
    backoff: float = 0.5
    threads: int = 16
    per_host: int = 8
    allow_private_hosts: bool = False
    max_redirects: int = 3


def check_host(url: str, allow_private: bool) -> None:
    """Refuse URLs whose host resolves to a private, loopback, link-local or metadata address (SSRF)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ImageError("bad_url", url[:200])
    if allow_private:
        return
    if parts.hostname in _METADATA_HOSTS:
        raise ImageError("blocked_host", parts.hostname)
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 80, proto=socket.IPPROTO_TCP)
    except socket.gaierror as e:
        raise ImageError("dns_error", f"{parts.hostname}: {e}") from None
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_multicast
                or ip.is_unspecified or str(ip) in _METADATA_HOSTS):
            raise ImageError("blocked_host", f"{parts.hostname} -> {ip}")


class Fetcher:
    """Downloads many URLs with a thread pool; at most `per_host` requests in flight per host."""

    def __init__(self, policy: FetchPolicy):
        self.policy = policy
        self.session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=32, pool_maxsize=policy.threads)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.host_slots: dict[str, threading.Semaphore] = {}
        self.lock = threading.Lock()

    def _slot(self, url: str) -> threading.Semaphore:
        host = urllib.parse.urlsplit(url).netloc
        with self.lock:
            return self.host_slots.setdefault(host, threading.Semaphore(self.policy.per_host))

    def _get_once(self, url: str) -> bytes:
        """One GET, following redirects by hand so every hop passes the SSRF guard."""
        p = self.policy
        for _ in range(p.max_redirects + 1):
            check_host(url, p.allow_private_hosts)
            with self._slot(url), self.session.get(url, timeout=p.timeout, stream=True, allow_redirects=False) as r:
                if r.is_redirect:
                    url = urllib.parse.urljoin(url, r.headers.get("Location", ""))
                    continue
                if r.status_code != 200:
                    raise ImageError(f"http_{r.status_code}")
                ctype = r.headers.get("Content-Type", "")
                if not ctype.startswith("image/"):
                    raise ImageError("bad_content_type", ctype[:80])
                declared = int(r.headers.get("Content-Length") or 0)
                if declared > p.max_bytes:
                    raise ImageError("too_large", f"{declared} bytes")
                body = bytearray()
                for chunk in r.iter_content(65536):
                    body += chunk
                    if len(body) > p.max_bytes:
                        raise ImageError("too_large", f"> {p.max_bytes} bytes")
                if declared and len(body) < declared:
                    raise ImageError("truncated", f"{len(body)} of {declared} bytes")
                if not sniff(bytes(body)):
                    raise ImageError("not_an_image", "magic bytes")
                return bytes(body)
        raise ImageError("too_many_redirects")

    def get(self, url: str) -> bytes:
        """GET with retries (exponential backoff, jitter) on 5xx, 429 and network errors."""
        for attempt in range(self.policy.retries + 1):
            try:
                return self._get_once(url)
            except ImageError as e:
                retry = e.reason == "http_429" or e.reason.startswith("http_5")
                if not retry or attempt == self.policy.retries:
                    raise
            except requests.Timeout:
                if attempt == self.policy.retries:
                    raise ImageError("timeout") from None
            except requests.RequestException as e:
                if attempt == self.policy.retries:
                    raise ImageError("network_error", str(e).splitlines()[0][:200]) from None
            time.sleep(self.policy.backoff * 2 ** attempt * random.uniform(0.5, 1.5))
        raise AssertionError("unreachable")

    def get_many(self, urls: list[str]) -> list[bytes | ImageError]:
        """Each URL's bytes, or the ImageError that says why not, in order."""
        def one(u: str) -> bytes | ImageError:
            try:
                return self.get(u)
            except ImageError as e:
                return e

        with ThreadPoolExecutor(max_workers=self.policy.threads) as pool:
            return list(pool.map(one, urls))
