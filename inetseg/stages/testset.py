"""Test-set stage: a folder of images/ and masks/ (same stems) -> the TEST table, kept at full size (Ray Data)."""
from __future__ import annotations

import dataclasses
import posixpath

import pyarrow as pa
import ray

from inetseg import config as C
from inetseg import evalsets, imaging, masks, schema, storage
from inetseg.ingest.listing import test_items
from inetseg.stages.common import declared_fingerprint, run_stage, write_stage


def _decode_pairs(batch: dict) -> pa.Table:
    """Decode a test image + mask pair (kept at full size: metrics are computed there)."""
    rows: dict[str, list] = {n: [] for n in schema.TEST.names}
    for img_path, mask_path in zip(batch["image_path"], batch["mask_path"]):
        img = imaging.decode_rgb(storage.read_bytes(str(img_path)))
        mask = masks.decode_mask(storage.read_bytes(str(mask_path)), str(mask_path))
        if mask.shape != img.shape[:2]:
            raise ValueError(f"test mask {mask_path} is {mask.shape}, image is {img.shape[:2]}")
        rows["id"].append(posixpath.splitext(posixpath.basename(str(img_path)))[0])
        rows["image"].append(imaging.encode_png(img))
        rows["mask"].append(imaging.encode_png(mask))
        rows["height"].append(img.shape[0])
        rows["width"].append(img.shape[1])
    return pa.Table.from_pydict(rows, schema=schema.TEST)


def run(cfg: C.TestSetConfig, resume: bool = True) -> dict:
    """Decode cfg.test into cfg.out (a re-run with the same config reuses it); returns the stage marker."""
    items = test_items(cfg.test)  # raises on a missing folder or no image/mask pairs, reused or not
    listed = storage.join(cfg.test, "classes.json")
    if not cfg.classes and storage.exists(listed):
        # Fingerprint the classes the marker will hold, so an edited classes.json is not reused stale.
        cfg = dataclasses.replace(cfg, classes=evalsets.parse_classes(listed))

    def body() -> dict:
        ds = ray.data.from_items(items, override_num_blocks=max(1, min(32, len(items) // 16)))
        ds = ds.map_batches(_decode_pairs, batch_size=16, batch_format="numpy")
        write_stage(ds, cfg.out, schema.TEST, 1000)
        return {"images": len(items), "classes": list(cfg.classes)}

    return run_stage("testset", cfg.out, declared_fingerprint("testset", cfg), resume, body)
