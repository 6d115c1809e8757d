"""Hidden-truth audits: the Ray Data map scores pseudo labels as the plain per-image loop would, with the truth in
the object store; filter quality from Arrow arrays."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from inetseg import audit, imaging, metrics, schema, shards
from inetseg.stages import audit as truth_audit


def _masks(rng, n: int, size: int = 24) -> list[np.ndarray]:
    out = []
    for i in range(n):
        m = np.zeros((size, size), np.uint8)
        m[rng.integers(0, 8):rng.integers(12, 24), rng.integers(0, 8):rng.integers(12, 24)] = 1 + i % 2
        out.append(m)
    return out


@pytest.fixture(scope="module")
def tables(tmp_path_factory, ray_session):
    """A PSEUDO table of 40 rows (some ignored pixels, one id without truth) and its truth as a dict."""
    rng = np.random.default_rng(0)
    gts, preds = _masks(rng, 40), _masks(rng, 40)
    for p in preds[::3]:
        p[:3] = 255  # an ignore band
    ids = [f"img{i:03d}" for i in range(40)]
    truth = {i: {"noise": "clean" if k % 4 else "wrong_tag", "mask": imaging.encode_png(g)}
             for k, (i, g) in enumerate(zip(ids, gts)) if i != "img007"}
    rows: dict = {n: [] for n in schema.PSEUDO.names}
    for i, p in zip(ids, preds):
        for k, v in (("id", i), ("tag", "a"), ("label", 1), ("image", b""), ("mask", imaging.encode_png(p)),
                     ("attention", b""), ("height", 24), ("width", 24), ("ignored", 0.0), ("foreground", 0.0)):
            rows[k].append(v)
    path = str(tmp_path_factory.mktemp("pseudo") / "pseudo")
    shards.prepare(path)
    for part in range(4):  # several files: several blocks, several batches
        shards.write_table(pa.Table.from_pydict(rows, schema=schema.PSEUDO).slice(part * 10, 10), path,
                           f"part-{part}.parquet")
    shards.mark_complete(path, "test", {})
    return path, truth, ids, gts, preds


def test_the_ray_map_equals_the_per_image_loop(tables):
    path, truth, ids, gts, preds = tables
    got = truth_audit.pseudo_label_quality(path, truth, ["a", "b"])
    cm = np.zeros((3, 4), np.int64)
    labelled = correct = total = 0
    for i, g, p in zip(ids, gts, preds):
        if i not in truth:
            continue
        cm += metrics.confusion_matrix(g, p, 3)
        valid = p != 255
        labelled, correct, total = labelled + valid.sum(), correct + (p[valid] == g[valid]).sum(), total + p.size
    assert got["images"] == 39
    assert got["miou"] == pytest.approx(metrics.summarize(cm, ["background", "a", "b"])["miou"])
    assert got["precision"] == pytest.approx(correct / labelled)
    assert got["ignored"] == pytest.approx(1 - labelled / total)
    # the truth as a table in the object store gives the same
    ref = ray_put(audit.truth_table(truth))
    assert truth_audit.pseudo_label_quality(path, ref, ["a", "b"]) == got


def ray_put(table):
    import ray

    return ray.put(table)


def test_filter_quality_from_arrow_arrays(tables):
    _, truth, ids, _, _ = tables
    kept = pa.array([i for k, i in enumerate(ids) if k % 4])  # drops exactly the wrong_tag ones (and img007's kin)
    q = audit.removal_quality(pa.array(ids), kept, audit.truth_table(truth))
    assert q["images_in"] == 40 and q["images_kept"] == 30
    assert q["precision"] == 1.0 and q["recall"] == 1.0 and q["noise_after"] == 0.0
