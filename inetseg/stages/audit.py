"""Hidden-truth audits as Ray Data maps: pseudo labels scored batch by batch where they are, the truth in the
object store, so the driver holds no per-image object whatever the corpus size (measurement only)."""
from __future__ import annotations

from typing import Any

import pyarrow as pa
import ray

from inetseg import audit, storage
from inetseg.stages.common import read_stage


def truth_ref(corpus: str) -> ray.ObjectRef:
    """The corpus's TRUTH table, read by a task into the object store (never materialised on the driver)."""
    return ray.remote(num_cpus=1)(audit.load_truth_table).remote(corpus)


def _put(truth: dict | pa.Table | ray.ObjectRef) -> ray.ObjectRef:
    return truth if isinstance(truth, ray.ObjectRef) else ray.put(audit.truth_table(truth))


def _counts(batch: pa.Table, truth: ray.ObjectRef, n: int) -> pa.Table:
    return audit.pseudo_counts(batch, ray.get(truth), n)  # zero-copy from the object store's shared memory


def pseudo_label_quality(pseudo: str, truth: dict | pa.Table | ray.ObjectRef, classes: list[str]) -> dict:
    """audit.pseudo_quality of a PSEUDO table against the truth (a dict, a TRUTH table or its object ref)."""
    ref = _put(truth)
    counts = read_stage(pseudo, "pseudo labels", columns=["id", "mask"]).map_batches(
        _counts, batch_format="pyarrow", batch_size=256, fn_kwargs={"truth": ref, "n": len(classes) + 1})
    tables = ray.get(counts.to_arrow_refs())  # one small COUNTS row per batch
    return audit.pseudo_quality(pa.concat_tables(tables) if tables else audit.COUNTS.empty_table(), classes)


def attention_audit(cfg: Any, meta: dict, truth: Any, classes: list[str]) -> dict:
    """The attention stage's pseudo labels against the hidden truth."""
    return {"pseudo": pseudo_label_quality(cfg.out, truth, classes)}


def finetune_audit(cfg: Any, meta: dict, truth: Any, classes: list[str]) -> dict:
    """Each fine-tuning round's kept pseudo labels against the hidden truth (round1, round2, ...)."""
    return {f"round{r['round']}": pseudo_label_quality(storage.join(cfg.out, f"round{r['round']}", "pseudo"),
                                                       truth, classes) for r in meta.get("rounds", [])}


def filter_quality(images_in: str, images_out: str, truth: dict | pa.Table | ray.ObjectRef) -> dict:
    """audit.filter_quality; with the truth as an object ref, in a task beside it (the driver never fetches the
    truth's masks: a transfer on a cluster), returning only the small dict."""
    if isinstance(truth, ray.ObjectRef):
        return ray.get(ray.remote(num_cpus=0.1)(audit.filter_quality).remote(images_in, images_out, truth))
    return audit.filter_quality(images_in, images_out, truth)
