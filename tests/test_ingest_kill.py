"""An ingest SIGKILLed five times at random points, then resumed, equals an uninterrupted run."""
import json
import os
import random
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
from conftest import kill_tree

from inetseg import config as C
from inetseg import shards
from inetseg.config import CrawlConfig, SynthConfig
from inetseg.sources import flickr, synth
from inetseg.sources.fake_flickr import FakeFlickr, Faults
from inetseg.stages import ingest

TAGS = synth.class_names(2)
OPTS = {"max_side": "64", "rows_per_shard": "20", "files_per_task": "5", "per_host_concurrency": "2",
        "allow_private_hosts": "true"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A slow offline Flickr (so kills land mid-run) and a crawl manifest of 400 photos."""
    root = tmp_path_factory.mktemp("kill")
    synth.generate(SynthConfig(num_classes=2, images_per_class=200, test_images=1, image_size=64), str(root / "c"),
                   progress=False)
    with FakeFlickr(str(root / "c" / "search")) as fake:
        os.environ.update(FLICKR_API_KEY="k", FLICKR_API_SECRET="s")
        flickr.crawl(CrawlConfig(out=str(root / "crawl"), tags=TAGS, per_tag=200, rest_url=fake.rest_url,
                                 calls_per_hour=1e9), progress=False)
        fake.faults = Faults(latency=0.05)
        yield root, fake


def _visible_files_are_whole(out):
    for f in shards.parquet_files(str(out)):
        pq.read_table(f)  # a torn file would fail here
        assert os.path.basename(f).startswith("part-")


def test_sigkill_five_times_then_resume_equals_uninterrupted(ray_session, served):
    root, fake = served
    source = str(root / "crawl")
    ref = root / "ref"
    overrides = [f"source={source}", f"out={ref}", *[f"{k}={v}" for k, v in OPTS.items()]]
    ingest.run(C.load(C.IngestConfig, None, overrides), progress=False)
    out = root / "killed"
    cmd = [sys.executable, "-m", "inetseg.cli", "ingest", f"source={source}", f"out={out}",
           *[f"{k}={v}" for k, v in OPTS.items()], "--num-cpus", "2"]
    env = {**os.environ, "RAY_ADDRESS": ""}
    rng = random.Random(3)
    finished_before_kill = []
    for i in range(5):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        target = 2 * i + rng.randint(1, 2)  # shards finished (all runs together) before this kill
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if len(list((out / "_shards").glob("*.json"))) >= target:
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0, 0.3))  # somewhere inside the next shards
        assert proc.poll() is None, "the ingest finished before it could be killed; slow the server down"
        kill_tree(proc)
        finished_before_kill.append(len(list((out / "_shards").glob("*.json"))))
        _visible_files_are_whole(out)
        assert not (out / "_SUCCESS.json").exists()
    assert 0 < finished_before_kill[-1] < 20  # the kills landed mid-run, with progress kept between them
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    meta = json.loads((out / "_SUCCESS.json").read_text())
    assert meta["resumed_shards"] >= finished_before_kill[-1]
    a = shards.read_table(str(ref)).sort_by("id")
    b = shards.read_table(str(out)).sort_by("id")
    assert b.num_rows == 400 and len(set(b.column("id").to_pylist())) == 400
    assert a.equals(b)
    assert json.loads((ref / "stats.json").read_text()) == json.loads((out / "stats.json").read_text())
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
