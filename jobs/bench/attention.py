"""Attention maps against a plain gradient of the same layers: the network's part, and the stage's whole path.

    python jobs/bench/attention.py --out FILE.json [--nets paper,demo,real] [--batch 16] [--repeats 7]

Per net, on the same random-initialised GoogLeNet (eval mode) and the same batch, these run interleaved in
one process (a noisy neighbour hits all alike), each --repeats times after a warm-up:

  maps       the attention model: one forward with excitation layers, the backward of Eqn 6-7 to conv3 and
             inception3b, the forward CAM of inception5b, Eqn 8's fusion (stem below conv3 under no_grad)
  grad       the equal-work baseline: the plain forward, stem under no_grad, and
             torch.autograd.grad(logits, [conv3, inception3b]) of the one-hot logits, summed over channels
             (a gradient saliency map of the same two layers)
  full       the stage's per-batch path from decoded uint8 photos: resize and normalise, the maps above,
             back to each photo's size, [objectness,] Eqn 9 segment smoothing and Eqn 10's trimap
             (inetseg.attention.maps.attention_maps + pseudo_label, exactly what the attention actors call)
  grad_path  the baseline's same path: resize and normalise, grad, back to each photo's size

ratio_maps_vs_grad = maps/s over grad/s; ratio_full_path_vs_grad[net] = full/s over grad_path/s
(goal >= 0.7 for the full path on every net). Nets: `paper` (GoogLeNet, input 224, 500 x 375 photos),
`demo` (channels x0.5, input 256, the demo's 128 px images), `real` (the demo net with the real preset's
objectness prior). Medians with min and max over repeats; the per-repeat ratios too.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from inetseg import imaging, storage
from inetseg.attention.cam import forward_cam
from inetseg.attention.excitation import googlenet_excitation
from inetseg.attention.fusion import fuse
from inetseg.attention.maps import Method, attention_maps, pseudo_label
from inetseg.models.classifier import STAGES_BEFORE_POOL5, build_classifier
from inetseg.train.data import normalise
from jobs.bench.common import machine, ratio_spread, spread, versions

# net -> (GoogLeNet width, network input side, photo height, photo width, objectness weight)
NETS = {"paper": (1.0, 224, 375, 500, 0.0), "demo": (0.5, 256, 128, 128, 0.0), "real": (0.5, 256, 128, 128, 1.0)}


def maps(model, x, lab0, size):
    """Eqn 5-8 on a prepared batch (attention_maps minus input preparation and resizing)."""
    out = googlenet_excitation(model, x, lab0, bias="ignore")
    with torch.no_grad():
        cam = forward_cam(out["inception5b"], model.fc.weight, lab0)
        return fuse(cam, out["conv3"], out["inception3b"], size)


def grad(model, x, lab0):
    """The same two layers' plain gradient, the stem below conv3 under no_grad as in googlenet_excitation."""
    m = model
    with torch.no_grad():
        y = m.conv2(m.maxpool1(m.conv1(x)))
    y = y.detach().requires_grad_(True)
    conv3 = m.conv3(y)
    i3b = m.inception3b(m.inception3a(m.maxpool2(conv3)))
    z = m.maxpool3(i3b)
    for name in STAGES_BEFORE_POOL5:
        z = getattr(m, name)(z)
    z = m.inception5b(m.inception5a(m.maxpool4(z)))
    logits = m.fc(torch.flatten(m.avgpool(z), 1))
    onehot = F.one_hot(lab0, logits.shape[1]).to(logits.dtype)
    g2, g3b = torch.autograd.grad(logits, [conv3, i3b], grad_outputs=onehot)
    return g2.sum(1), g3b.sum(1)


def grad_path(model, photos, labels, input_size):
    """The baseline from uint8 photos to a map per photo at its own size (the full path minus Eqn 5-10)."""
    x = torch.from_numpy(normalise(np.stack([imaging.resize_square(im, input_size) for im in photos])))
    g2, _ = grad(model, x, torch.as_tensor(labels - 1, dtype=torch.long))
    g = g2.detach().clamp(min=0).numpy()
    return [cv2.resize(a, (im.shape[1], im.shape[0]), interpolation=cv2.INTER_LINEAR) for a, im in zip(g, photos)]


def full_path(model, photos, labels, input_size, method):
    """What an attention actor runs on a decoded batch: maps at each photo's size, Eqn 9, Eqn 10."""
    atts = attention_maps(model, photos, labels, input_size, torch.device("cpu"), method)
    return [pseudo_label(a, im, int(lab), method) for a, im, lab in zip(atts, photos, labels)]


def photos_like(n: int, h: int, w: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Photo-like images (smooth colour fields with an object-ish blob), so segments are not per-pixel noise."""
    out = []
    for _ in range(n):
        small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        im = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
        cy, cx = int(rng.integers(h // 4, 3 * h // 4)), int(rng.integers(w // 4, 3 * w // 4))
        cv2.ellipse(im, (cx, cy), (w // 5, h // 4), 0, 0, 360, tuple(int(c) for c in rng.integers(0, 256, 3)), -1)
        noise = rng.normal(0, 6, im.shape)
        out.append(np.clip(im + noise, 0, 255).astype(np.uint8))
    return out


def bench_net(name: str, batch: int, classes: int, repeats: int) -> dict:
    """Interleaved repeats of the four timings for one net; images/s medians and ratios."""
    width, input_size, h, w, objectness = NETS[name]
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = build_classifier(classes, width).eval()
    photos = photos_like(batch, h, w, rng)
    labels = rng.integers(1, classes + 1, batch)
    x = torch.from_numpy(normalise(np.stack([imaging.resize_square(im, input_size) for im in photos])))
    lab0 = torch.as_tensor(labels - 1, dtype=torch.long)
    method = Method(objectness=objectness)
    fns = {"maps": lambda: maps(model, x, lab0, (input_size, input_size)), "grad": lambda: grad(model, x, lab0),
           "full": lambda: full_path(model, photos, labels, input_size, method),
           "grad_path": lambda: grad_path(model, photos, labels, input_size)}
    for fn in fns.values():  # warm-up: allocator, kernels, skimage's first call
        fn()
    per_s: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(repeats):
        order = list(fns) if r % 2 == 0 else list(reversed(fns))  # alternate who goes first
        for k in order:
            t0 = time.perf_counter()
            fns[k]()
            per_s[k].append(batch / (time.perf_counter() - t0))
        print(f"{name} repeat {r + 1}/{repeats}: " + ", ".join(f"{k} {per_s[k][-1]:.1f}/s" for k in fns), flush=True)
    return {"settings": {"width": width, "input_size": input_size, "photo": [h, w], "objectness": objectness,
                         "batch": batch, "classes": classes, "repeats": repeats},
            "images_per_s": {k: spread(v) for k, v in per_s.items()},
            "ratio_maps_vs_grad": ratio_spread(per_s["maps"], per_s["grad"]),
            "ratio_full_path_vs_grad": ratio_spread(per_s["full"], per_s["grad_path"])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--nets", default="paper,demo,real", help=f"comma-separated, of {', '.join(NETS)}")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    args = ap.parse_args(argv)
    nets = [n for n in args.nets.split(",") if n]
    unknown = [n for n in nets if n not in NETS]
    if unknown:
        ap.error(f"unknown net(s) {unknown}; choose from {list(NETS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    per_net = {n: bench_net(n, args.batch, args.classes, args.repeats) for n in nets}
    result = {
        "ratio_full_path_vs_grad": {n: r["ratio_full_path_vs_grad"]["median"] for n, r in per_net.items()},
        "ratio_maps_vs_grad": {n: r["ratio_maps_vs_grad"]["median"] for n, r in per_net.items()},
        "goal": "ratio_full_path_vs_grad >= 0.7 on every net",
        "goal_met": all(r["ratio_full_path_vs_grad"]["median"] >= 0.7 for r in per_net.values()),
        "nets": per_net, "torch_threads": torch.get_num_threads(), "versions": versions(), "machine": machine(),
    }
    storage.write_json(args.out, result)
    for n, r in per_net.items():
        ips = r["images_per_s"]
        print(f"{n}: maps {ips['maps']['median']:.1f}/s vs grad {ips['grad']['median']:.1f}/s -> "
              f"{r['ratio_maps_vs_grad']['median']:.2f}; full path {ips['full']['median']:.1f}/s vs "
              f"{ips['grad_path']['median']:.1f}/s -> {r['ratio_full_path_vs_grad']['median']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
