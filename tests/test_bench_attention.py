"""jobs/bench/attention.py: its baseline is the real gradient of the same layers, and the script writes its keys."""
from __future__ import annotations

import json

import torch
import torch.nn.functional as F

from inetseg.models.classifier import build_classifier
from jobs.bench import attention as bench


def test_grad_baseline_is_the_gradient_of_the_models_own_forward():
    torch.manual_seed(0)
    model = build_classifier(4, 0.25).eval()
    x = torch.randn(2, 3, 64, 64)
    lab0 = torch.tensor([1, 3])
    g2, g3b = bench.grad(model, x, lab0)
    # Reference: hooks on the unmodified forward, gradient of the chosen logits w.r.t. conv3 and inception3b.
    taps: dict[str, torch.Tensor] = {}
    hooks = [getattr(model, n).register_forward_hook(lambda m, i, o, n=n: taps.__setitem__(n, o))
             for n in ("conv3", "inception3b")]
    logits = model(x)
    for h in hooks:
        h.remove()
    ref = torch.autograd.grad(logits, [taps["conv3"], taps["inception3b"]],
                              grad_outputs=F.one_hot(lab0, 4).to(logits.dtype))
    assert torch.allclose(g2, ref[0].sum(1), atol=1e-5)
    assert torch.allclose(g3b, ref[1].sum(1), atol=1e-5)


def test_writes_the_ratios_per_net_with_versions_and_spread(tmp_path):
    out = tmp_path / "attention.json"
    assert bench.main(["--out", str(out), "--nets", "demo,real", "--batch", "2", "--repeats", "2",
                       "--classes", "3"]) == 0
    got = json.loads(out.read_text())
    assert set(got["ratio_full_path_vs_grad"]) == {"demo", "real"}
    assert all(r > 0 for r in got["ratio_full_path_vs_grad"].values())
    demo = got["nets"]["demo"]
    assert demo["images_per_s"]["full"]["n"] == 2
    assert demo["images_per_s"]["full"]["min"] <= demo["images_per_s"]["full"]["median"]
    assert torch.__version__.startswith(got["versions"]["torch"])  # the distribution's version (no local tag)
