"""The Flickr crawler against the offline Flickr over real HTTP through flickrapi: slicing, resume, faults."""
import shutil

import pyarrow.compute as pc
import pytest
import requests

from inetseg import shards
from inetseg.config import ConfigError, CrawlConfig, SynthConfig
from inetseg.sources import flickr, synth
from inetseg.sources.fake_flickr import FakeFlickr, Faults

TAGS = synth.class_names(3)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    synth.generate(SynthConfig(num_classes=3, images_per_class=30, test_images=1, image_size=48), str(out),
                   progress=False)
    return out / "search"


@pytest.fixture(autouse=True)
def creds(monkeypatch):
    monkeypatch.setenv("FLICKR_API_KEY", "test-key")
    monkeypatch.setenv("FLICKR_API_SECRET", "test-secret")


def config(fake, out, **kw):
    # 8 results per query at most, 4 per page: each tag's 30 photos need several date windows.
    base = dict(out=str(out), tags=TAGS, per_tag=30, rest_url=fake.rest_url, per_page=4,
                max_results_per_query=8, calls_per_hour=1e9, backoff_seconds=0.01, max_retries=8)
    return CrawlConfig(**{**base, **kw})


def ids(out):
    t = shards.read_table_file(str(out / "manifest.parquet"))
    return sorted(zip(t.column("tag").to_pylist(), t.column("photo_id").to_pylist()))


def test_crawl_slices_windows_and_fetches_every_photo(corpus, tmp_path):
    with FakeFlickr(str(corpus), max_results=8) as fake:
        meta = flickr.crawl(config(fake, tmp_path / "c"), progress=False)
        manifest = shards.read_table_file(str(tmp_path / "c" / "manifest.parquet"))
        assert meta["photos"] == 90 and manifest.num_rows == 90
        assert len(set(manifest.column("photo_id").to_pylist())) == 90
        assert meta["per_tag"] == {t: 30 for t in TAGS}
        assert list((tmp_path / "c" / "windows" / TAGS[0]).glob("*.split"))  # the cap forced splits
        r = requests.get(manifest.column("url")[0].as_py(), timeout=10)
        assert r.status_code == 200 and r.content[:3] == b"\xff\xd8\xff"


def test_killed_crawl_resumes_to_the_same_manifest(corpus, tmp_path):
    with FakeFlickr(str(corpus), max_results=8) as fake:
        flickr.crawl(config(fake, tmp_path / "full"), progress=False)
    with FakeFlickr(str(corpus), max_results=8, faults=Faults(fail_after=9)) as dying:
        with pytest.raises(RuntimeError, match="failed"):
            flickr.crawl(config(dying, tmp_path / "part"), progress=False)
    with FakeFlickr(str(corpus), max_results=8) as fake:
        meta = flickr.crawl(config(fake, tmp_path / "part"), progress=False)
        again_calls = fake.calls["api"]
    assert ids(tmp_path / "part") == ids(tmp_path / "full")
    with FakeFlickr(str(corpus), max_results=8) as fake:
        flickr.crawl(config(fake, tmp_path / "part"), progress=False)
        assert fake.calls.get("api", 0) == 0  # every window finished: nothing is asked again
    assert again_calls < meta["calls"] + 1


def test_errors_and_rate_limits_are_retried(corpus, tmp_path):
    with FakeFlickr(str(corpus), max_results=8) as fake:
        flickr.crawl(config(fake, tmp_path / "clean"), progress=False)
    faults = Faults(error_rate=0.25, rate_limit_rate=0.1, burst=2)
    with FakeFlickr(str(corpus), max_results=8, faults=faults, seed=3) as fake:
        meta = flickr.crawl(config(fake, tmp_path / "noisy"), progress=False)
    assert meta["retries"] > 0
    assert ids(tmp_path / "noisy") == ids(tmp_path / "clean")


def test_cross_tag_photos_are_ambiguous(corpus, tmp_path):
    root = tmp_path / "search"
    shutil.copytree(corpus, root)
    dup = sorted((root / TAGS[0]).iterdir())[0]
    shutil.copy(dup, root / TAGS[1] / "copy.jpg")
    with FakeFlickr(str(root), max_results=8) as fake:
        dropped = flickr.crawl(config(fake, tmp_path / "drop", per_tag=40), progress=False)
        kept = flickr.crawl(config(fake, tmp_path / "keep", per_tag=40, ambiguous="keep"), progress=False)
    assert dropped["ambiguous"] == 1 and dropped["photos"] == 89  # 90 + the copy, minus both sightings
    t = shards.read_table_file(str(tmp_path / "keep" / "manifest.parquet"))
    assert kept["photos"] == 90 and pc.sum(t.column("ambiguous")).as_py() == 1


def test_missing_credentials_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv("FLICKR_API_KEY")
    with pytest.raises(ConfigError, match="FLICKR_API_KEY"):
        flickr.crawl(CrawlConfig(out=str(tmp_path), tags=["a"]), progress=False)
    with pytest.raises(ConfigError, match="not found"):
        flickr.credentials(CrawlConfig(credentials_file=str(tmp_path / "none.yaml")))


def test_rate_limiter_spaces_calls():
    now = [0.0]
    slept = []

    def sleep(s):
        slept.append(s)
        now[0] += s

    lim = flickr.RateLimiter(3600, burst=2, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        lim.acquire()
    assert now[0] == pytest.approx(3.0)  # 2 free, then one a second


def test_command_line_crawl_against_fake_flickr_process(corpus, tmp_path):
    """`inetseg fake-flickr` in one process, `inetseg crawl` in another, over loopback HTTP."""
    import os
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "inetseg.cli", "fake-flickr", "--corpus", str(corpus),
                               "--port", str(port), "--max-results", "8"], stdout=subprocess.PIPE, text=True)
    try:
        assert "rest_url=" in server.stdout.readline()
        # Values no log line could contain by chance, searched for where they could leak: the crawl's output,
        # every file it wrote (manifest, cursor, state), and the same run with the secrets in a credentials file.
        key, secret = "k3y-5b9e1c7a2f", "s3cr3t-d4e8a0b6c2"
        env = {**os.environ, "FLICKR_API_KEY": key, "FLICKR_API_SECRET": secret}
        creds = tmp_path / "flickr.yaml"
        creds.write_text(f"api_key: {key}\napi_secret: {secret}\n")
        for out, extra, run_env in ((tmp_path / "c", [], env), (tmp_path / "f", [f"credentials_file={creds}"],
                                                               {k: v for k, v in os.environ.items()
                                                                if not k.startswith("FLICKR_")})):
            proc = subprocess.run([sys.executable, "-m", "inetseg.cli", "crawl", f"out={out}", f"tags={','.join(TAGS)}",
                                   "per_tag=10", "per_page=4", "max_results_per_query=8", "calls_per_hour=1000000",
                                   f"rest_url=http://127.0.0.1:{port}/services/rest/", *extra],
                                  capture_output=True, text=True, timeout=120, env=run_env)
            assert proc.returncode == 0, proc.stderr[-2000:]
            assert shards.read_table_file(str(out / "manifest.parquet")).num_rows == 30
            for value in (key, secret):
                assert value not in proc.stdout + proc.stderr
                leaked = [p for p in out.rglob("*") if p.is_file() and value.encode() in p.read_bytes()]
                assert not leaked, f"{value} written to {leaked}"
    finally:
        server.terminate()
        server.wait(timeout=30)
        time.sleep(0.1)


def test_sigkilled_crawl_resumes_to_the_same_manifest(corpus, tmp_path):
    """`inetseg crawl` SIGKILLed three times mid-crawl (a slow server), then finished: same manifest."""
    import os
    import random
    import signal
    import subprocess
    import sys
    import time

    rng = random.Random(11)
    with FakeFlickr(str(corpus), max_results=8) as fake:
        flickr.crawl(config(fake, tmp_path / "full"), progress=False)
        fake.faults = Faults(latency=0.03)
        args = [f"out={tmp_path / 'killed'}", f"tags={','.join(TAGS)}", "per_tag=30", "per_page=4",
                "max_results_per_query=8", f"rest_url={fake.rest_url}", "calls_per_hour=1000000"]
        cmd = [sys.executable, "-m", "inetseg.cli", "crawl", *args]
        env = {**os.environ, "FLICKR_API_KEY": "k", "FLICKR_API_SECRET": "s"}
        killed = 0
        for _ in range(3):
            start = fake.calls.get("api", 0)
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            target = start + rng.randint(3, 12)  # kill after a random number of answered API calls
            deadline = time.time() + 60
            while fake.calls.get("api", 0) < target and proc.poll() is None and time.time() < deadline:
                time.sleep(0.005)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                killed += 1
            proc.wait(timeout=30)
        assert killed == 3
        assert not (tmp_path / "killed" / "manifest.parquet").exists()
        fake.faults = Faults()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
    assert ids(tmp_path / "killed") == ids(tmp_path / "full")
