"""Download + ingest from a crawl's manifest, against the offline Flickr with injected faults."""
import json

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
