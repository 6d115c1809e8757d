"""Exported model folders (model.pt + meta.json): their file names, and one loader for either net."""
from __future__ import annotations

import os
import tempfile

import numpy as np
import torch
from torch import nn

from inetseg import storage
from inetseg.models.classifier import build_classifier
from inetseg.models.segmenter import Segmenter

MODEL_FILE = "model.pt"
META_FILE = "meta.json"
# What either net takes (inference.predict_logits), for users of an MLflow copy of it.
INPUT = "RGB, N x 3 x S x S float32, pixel / 127.5 - 1, each image letterboxed with grey into S x S"


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
    model.load_state_dict(torch.load(local_model_file(model_dir), map_location="cpu", weights_only=True))
    return model.to(device).eval(), meta


def copy_local(model_dir: str, dest: str) -> list[str]:
    """Copy `model_dir`'s model.pt and meta.json (local or cloud) into the local folder `dest`; their paths."""
    paths = []
    for fname in (MODEL_FILE, META_FILE):
        paths.append(os.path.join(dest, fname))
        with open(paths[-1], "wb") as f:
            f.write(storage.read_bytes(storage.join(model_dir, fname)))
    return paths


def example_input(meta: dict, batch: int = 2) -> np.ndarray:
    """A float32 N x 3 x S x S batch at the net's input side S: zeros (mid-grey once normalised), which keep
    the JSON example small; two images, as torch.export fixes a batch dimension of 1 into the graph."""
    if not meta.get("input_size"):
        raise ValueError("meta.json has no input_size: cannot build the model's input example")
    side = int(meta["input_size"])
    return np.zeros((batch, 3, side, side), np.float32)


def output_shape(meta: dict) -> tuple[int, ...]:
    """Per image, what the net returns: K class logits, or K+1 logit maps at its input size."""
    k, side = int(meta["num_classes"]), int(meta["input_size"])
    return (k + 1, side, side) if kind_of(meta) == "segmenter" else (k,)


def card(meta: dict) -> dict:
    """What describes a net beside its weights: meta.json without the per-epoch history, and its input."""
    return {**{k: v for k, v in meta.items() if k != "history"}, "input": INPUT}
