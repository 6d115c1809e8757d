"""HTTP image download for ingest: SSRF guard, size/type/magic checks, retries, per-host limits (no Ray)."""
from __future__ import annotations

import collections
import ipaddress
import random
import socket
import threading
import time
import urllib.parse
from collections.abc import Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
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


def _blocked(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_multicast
            or ip.is_unspecified or str(ip) in _METADATA_HOSTS)


def check_host(url: str, allow_private: bool) -> str:
    """The address to connect to for `url`: its host resolved once, every answer vetted against private, loopback,
    link-local and metadata addresses (SSRF) unless allow_private. The caller connects to exactly this address
    (pinned_url): resolving the name again could answer differently (DNS rebinding)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ImageError("bad_url", url[:200])
    if not allow_private and parts.hostname in _METADATA_HOSTS:
        raise ImageError("blocked_host", parts.hostname)
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 80, proto=socket.IPPROTO_TCP)
    except socket.gaierror as e:
        raise ImageError("dns_error", f"{parts.hostname}: {e}") from None
    ips = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not ips:
        raise ImageError("dns_error", f"{parts.hostname}: no address")
    for ip in ips if not allow_private else []:
        if _blocked(ip):
            raise ImageError("blocked_host", f"{parts.hostname} -> {ip}")
    return str(ips[0])


def pinned_url(url: str, ip: str) -> tuple[str, dict[str, str]]:
    """`url` with its host replaced by the vetted address, and the Host header that keeps the name."""
    parts = urllib.parse.urlsplit(url)
    host = f"[{ip}]" if ":" in ip else ip
    netloc = f"{host}:{parts.port}" if parts.port else host
    name = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")), {"Host": name}


class PinnedAdapter(requests.adapters.HTTPAdapter):
    """Requests to a pinned URL (the vetted IP) whose TLS still checks the name: SNI and the certificate's host
    are the Host header's name, not the address."""

    def build_connection_pool_key_attributes(self, request, verify, cert=None):  # type: ignore[no-untyped-def]
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        name = urllib.parse.urlsplit("//" + request.headers.get("Host", "")).hostname
        if host_params.get("scheme") == "https" and name:
            pool_kwargs.update(server_hostname=name, assert_hostname=name)
        return host_params, pool_kwargs


class Fetcher:
    """Downloads many URLs with a thread pool; at most `per_host` requests in flight per host."""

    def __init__(self, policy: FetchPolicy):
        self.policy = policy
        self.session = requests.Session()
        adapter = PinnedAdapter(pool_connections=32, pool_maxsize=policy.threads)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.host_slots: dict[str, threading.Semaphore] = {}
        self.lock = threading.Lock()

    def _slot(self, url: str) -> threading.Semaphore:
        host = urllib.parse.urlsplit(url).netloc
        with self.lock:
            return self.host_slots.setdefault(host, threading.Semaphore(self.policy.per_host))

    def _get_once(self, url: str) -> bytes:
        """One GET, following redirects by hand so every hop passes the SSRF guard and connects to the address
        the guard vetted."""
        p = self.policy
        for _ in range(p.max_redirects + 1):
            target, headers = pinned_url(url, check_host(url, p.allow_private_hosts))
            with self._slot(url), self.session.get(target, headers=headers, timeout=p.timeout, stream=True,
                                                   allow_redirects=False) as r:
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

    def _one(self, url: str) -> bytes | ImageError:
        try:
            return self.get(url)
        except ImageError as e:
            return e

    def get_many(self, urls: list[str]) -> list[bytes | ImageError]:
        """Each URL's bytes, or the ImageError that says why not, in order."""
        return list(self.iter_many(urls, window=len(urls)))

    def iter_many(self, urls: Iterable[str], window: int) -> Generator[bytes | ImageError, None, None]:
        """Each URL's bytes (or ImageError), in order, as they arrive: up to `window` fetched ahead of the consumer,
        so a caller that decodes while iterating keeps the downloads going (memory: at most `window` bodies)."""
        window = max(1, window)
        pool = ThreadPoolExecutor(max_workers=self.policy.threads)
        ahead: collections.deque[Future] = collections.deque()
        try:
            for url in urls:
                ahead.append(pool.submit(self._one, url))
                if len(ahead) >= window:
                    yield ahead.popleft().result()
            while ahead:
                yield ahead.popleft().result()
        finally:  # a consumer that stops early (an error, a kill) leaves no queued download behind
            pool.shutdown(wait=True, cancel_futures=True)
