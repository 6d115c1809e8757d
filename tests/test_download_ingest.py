"""Download + ingest from a crawl's manifest, against the offline Flickr with injected faults."""
import http.server
import json
import ssl
import threading

import cv2
import numpy as np
import pytest

from inetseg import download, shards
from inetseg.config import CrawlConfig, IngestConfig, SynthConfig
from inetseg.imaging import ImageError
from inetseg.sources import flickr, synth
from inetseg.sources.fake_flickr import FakeFlickr, Faults
from inetseg.stages import ingest

TAGS = synth.class_names(2)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    synth.generate(SynthConfig(num_classes=2, images_per_class=150, test_images=1, image_size=64), str(out),
                   progress=False)
    return out / "search"


def _crawl(fake, out, monkeypatch):
    monkeypatch.setenv("FLICKR_API_KEY", "k")
    monkeypatch.setenv("FLICKR_API_SECRET", "s")
    flickr.crawl(CrawlConfig(out=str(out), tags=TAGS, per_tag=150, rest_url=fake.rest_url, calls_per_hour=1e9),
                 progress=False)
    return out


@pytest.mark.parametrize("url,reason", [("http://127.0.0.1:9/x.jpg", "blocked_host"),
                                        ("http://169.254.169.254/latest/meta-data", "blocked_host"),
                                        ("http://[::1]/a.jpg", "blocked_host"),
                                        ("ftp://example.com/a.jpg", "bad_url")])
def test_ssrf_guard(url, reason):
    with pytest.raises(ImageError) as e:
        download.check_host(url, allow_private=False)
    assert e.value.reason == reason
    if reason == "blocked_host":
        download.check_host(url, allow_private=True)  # the test servers' escape hatch


def test_a_dns_answer_that_changes_after_the_check_cannot_redirect_the_download(corpus, monkeypatch):
    """DNS rebinding: the name answers a public address to the guard, then the loopback server. The download must
    connect to the address the guard vetted (and fail: there is no route out), never resolve the name again."""
    import socket
    import urllib.parse

    with FakeFlickr(str(corpus)) as fake:
        url = fake.search({"tags": TAGS[0], "per_page": "1"})["photos"]["photo"][0]["url_m"]
        port = urllib.parse.urlsplit(url).port
        real, answers = socket.getaddrinfo, []

        def rebinding(host, *args, **kwargs):
            if host != "rebind.example":
                return real(host, *args, **kwargs)
            answers.append("8.8.8.8" if not answers else "127.0.0.1")
            return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (answers[-1], port))]

        monkeypatch.setattr(socket, "getaddrinfo", rebinding)
        evil = url.replace("127.0.0.1", "rebind.example")
        got = download.Fetcher(download.FetchPolicy(retries=0, timeout=2)).get_many([evil])[0]
        assert isinstance(got, ImageError) and got.reason in ("network_error", "timeout"), got
        assert answers == ["8.8.8.8"]  # resolved once, by the guard; the loopback answer was never asked for
        # the same server through its own address is reachable with the test flag: the failure above is the pin
        assert download.Fetcher(download.FetchPolicy(allow_private_hosts=True)).get_many([url])[0][:3] == \
            b"\xff\xd8\xff"


class _TLSServer:
    """A loopback HTTPS server with a self-signed certificate for one name; records the SNI names it was asked."""

    def __init__(self, folder, name: str):
        import datetime

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(key, hashes.SHA256()))
        self.ca = str(folder / "cert.pem")
        keyfile = str(folder / "key.pem")
        with open(self.ca, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        with open(keyfile, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
        self.sni: list[str | None] = []
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(self.ca, keyfile)
        self.ctx.sni_callback = lambda sock, server_name, ctx: self.sni.append(server_name)

    def __enter__(self):
        body = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = self.ctx.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_a_pinned_https_download_keeps_the_name_for_sni_and_the_certificate(tmp_path, monkeypatch):
    """The download connects to the vetted address, yet TLS still sends and checks the URL's name: a certificate
    for that name passes, the same server under a name its certificate lacks fails, and so does an unknown CA."""
    import socket

    real = socket.getaddrinfo

    def resolver(host, *args, **kwargs):  # both names answer the loopback server's address
        if host in ("images.example", "other.example"):
            return real("127.0.0.1", *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    with _TLSServer(tmp_path, "images.example") as tls:
        port = tls.server.server_address[1]
        f = download.Fetcher(download.FetchPolicy(allow_private_hosts=True, retries=0, timeout=5, ca_certs=tls.ca))
        assert f.get_many([f"https://images.example:{port}/a.jpg"])[0][:3] == b"\xff\xd8\xff"
        assert ("https", "127.0.0.1", port, "images.example") in f.pools  # connected to the address, not the name
        assert tls.sni and set(tls.sni) == {"images.example"}
        wrong_name = f.get_many([f"https://other.example:{port}/a.jpg"])[0]
        assert isinstance(wrong_name, ImageError) and wrong_name.reason == "network_error", wrong_name
        unknown_ca = download.Fetcher(download.FetchPolicy(allow_private_hosts=True, retries=0, timeout=5))
        got = unknown_ca.get_many([f"https://images.example:{port}/a.jpg"])[0]
        assert isinstance(got, ImageError) and got.reason == "network_error", got
    assert download.host_header("https://images.example:8443/a.jpg?x=1") == "images.example:8443"
    assert download.host_header("http://images.example/a.jpg") == "images.example"


def test_fetch_checks_type_magic_and_size(corpus):
    faults = Faults(wrong_type_rate=1.0)
    with FakeFlickr(str(corpus), faults=faults) as fake:
        url = fake.search({"tags": TAGS[0], "per_page": "1"})["photos"]["photo"][0]["url_m"]
        f = download.Fetcher(download.FetchPolicy(allow_private_hosts=True, retries=0))
        assert f.get_many([url])[0].reason == "bad_content_type"
        fake.faults = Faults(garbage_rate=1.0)
        assert f.get_many([url])[0].reason == "not_an_image"
        fake.faults = Faults()
        small = download.Fetcher(download.FetchPolicy(allow_private_hosts=True, max_bytes=100))
        assert small.get_many([url])[0].reason == "too_large"
        assert f.get_many([url])[0][:3] == b"\xff\xd8\xff"


def test_iter_many_yields_in_order_while_keeping_at_most_a_window_of_downloads_ahead(corpus):
    import time

    with FakeFlickr(str(corpus)) as fake:
        photos = fake.search({"tags": TAGS[0], "per_page": "40"})["photos"]["photo"]
        urls = [p["url_m"] for p in photos]
        expected = download.Fetcher(download.FetchPolicy(allow_private_hosts=True)).get_many(urls)
        fake.calls.clear()
        f = download.Fetcher(download.FetchPolicy(allow_private_hosts=True, threads=8))
        got, ahead = [], []
        for body in f.iter_many(iter(urls), window=5):
            time.sleep(0.01)  # a consumer slower than the loopback server: the fetches wait on it
            ahead.append(fake.calls.get("img", 0) - len(got))
            got.append(body)
        assert got == expected  # every body, in the URLs' order
        assert max(ahead) <= 5  # never more than the window fetched ahead of the consumer
        fake.calls.clear()
        stream = f.iter_many(iter(urls), window=5)
        next(stream)
        stream.close()  # a consumer that stops early: the queued downloads are cancelled, not run
        assert fake.calls.get("img", 0) <= 5


def test_ingest_from_manifest_accounts_for_every_url(ray_session, corpus, tmp_path, monkeypatch):
    # The fault mix: 10% server errors, 5% corrupt (truncated) bodies, 1% decompression bombs.
    faults = Faults(error_rate=0.10, truncate_rate=0.05, oversized_rate=0.01)
    with FakeFlickr(str(corpus), faults=faults, seed=7) as fake:
        fake.faults = Faults()  # a clean crawl; the faults hit the downloads
        crawl = _crawl(fake, tmp_path / "crawl", monkeypatch)
        fake.faults = faults
        cfg = IngestConfig(source=str(crawl), out=str(tmp_path / "images"), max_side=64, allow_private_hosts=True,
                           download_retries=1, files_per_task=16)
        meta = ingest.run(cfg)
    stats = json.loads((tmp_path / "images" / "stats.json").read_text())
    assert stats["total"] == 300 and stats["ok"] + sum(stats["failed"].values()) == 300
    assert stats["ok"] >= 240 and stats["failed"].get("too_many_pixels", 0) >= 1
    assert stats["failed"].get("undecodable", 0) + stats["failed"].get("truncated", 0) >= 5
    assert meta["classes"] == TAGS
    t = shards.read_table(cfg.out, columns=["source", "status"])
    manifest = shards.read_table_file(str(crawl / "manifest.parquet"))
    assert sorted(t.column("source").to_pylist()) == sorted(manifest.column("url").to_pylist())


def test_ingest_refuses_loopback_without_the_flag(ray_session, corpus, tmp_path, monkeypatch):
    with FakeFlickr(str(corpus)) as fake:
        crawl = _crawl(fake, tmp_path / "crawl", monkeypatch)
        ingest.run(IngestConfig(source=str(crawl), out=str(tmp_path / "images"), max_side=64))
    stats = json.loads((tmp_path / "images" / "stats.json").read_text())
    assert stats["ok"] == 0 and stats["failed"] == {"blocked_host": 300}
