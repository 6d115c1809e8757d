"""One loader for both exported nets: the net is picked by meta.json's kind (pure torch, no Ray)."""
import json

import pytest
import torch

from inetseg.models.classifier import build_classifier
from inetseg.models.io import load_model
from inetseg.models.segmenter import Segmenter


def _export(folder, model, meta) -> str:
    folder.mkdir()
    torch.save(model.state_dict(), folder / "model.pt")
    (folder / "meta.json").write_text(json.dumps(meta))
    return str(folder)


def test_load_model_builds_the_kind_its_meta_names(tmp_path):
    torch.manual_seed(0)
    clf = build_classifier(3, 0.25)
    c_dir = _export(tmp_path / "c", clf, {"kind": "classifier", "num_classes": 3, "width": 0.25})
    seg = Segmenter(3, 0.25, (2, 4))
    meta = {"num_classes": 3, "width": 0.25, "aspp_rates": [2, 4]}  # no kind: an older export
    s_dir = _export(tmp_path / "s", seg, meta)

    model, meta = load_model(c_dir, torch.device("cpu"), "classifier")
    assert not model.training and meta["num_classes"] == 3
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), clf.state_dict().values()))
    model, _ = load_model(s_dir, torch.device("cpu"))
    assert isinstance(model, Segmenter) and model(torch.zeros(1, 3, 64, 64)).shape == (1, 4, 64, 64)
    with pytest.raises(ValueError, match="holds a segmenter, not a classifier"):
        load_model(s_dir, torch.device("cpu"), "classifier")
