"""Exported model folders (model.pt + meta.json): their file names, and one loader for either net."""
from __future__ import annotations

import os
import tempfile

import torch
from torch import nn

from inetseg import storage
from inetseg.models.classifier import build_classifier
from inetseg.models.segmenter import Segmenter

MODEL_FILE = "model.pt"
META_FILE = "meta.json"


def local_model_file(model_dir: str) -> str:
    """A path on this node to `model_dir`/model.pt, downloaded first when the folder is a cloud URI."""
    path = storage.join(model_dir, MODEL_FILE)
    if not storage.is_uri(path):
        return path
    local = os.path.join(tempfile.mkdtemp(prefix="inetseg-model-"), MODEL_FILE)
    with open(local, "wb") as f:
        f.write(storage.read_bytes(path))
    return local


def kind_of(meta: dict) -> str:
    """'classifier' or 'segmenter'. Every export writes `kind`; a folder without it is inferred from the
    segmenter-only `aspp_rates` key (segment.read_model_meta reads such folders as segmenters too)."""
    return meta.get("kind") or ("segmenter" if "aspp_rates" in meta else "classifier")


def build(meta: dict) -> nn.Module:
    """The untrained net a meta.json describes (its weights come from model.pt)."""
    if kind_of(meta) == "segmenter":
        return Segmenter(meta["num_classes"], meta["width"], tuple(meta["aspp_rates"]))
    return build_classifier(meta["num_classes"], meta["width"])


def load_model(model_dir: str, device: torch.device, kind: str = "") -> tuple[nn.Module, dict]:
    """The exported net (eval mode, on `device`) and its meta; kind='classifier'/'segmenter' makes a folder
    of the other kind a one-line ValueError instead of a state_dict mismatch."""
    meta = storage.read_json(storage.join(model_dir, META_FILE))
    if kind and kind_of(meta) != kind:
        raise ValueError(f"{model_dir} holds a {kind_of(meta)}, not a {kind}")
    model = build(meta)
    model.load_state_dict(torch.load(local_model_file(model_dir), map_location="cpu"))
    return model.to(device).eval(), meta
