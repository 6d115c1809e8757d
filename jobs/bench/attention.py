"""Attention maps per second against a plain forward + backward of the same network, same batch.

    python jobs/bench/attention.py --out FILE.json [--width 1.0] [--input-size 224] [--batch 16] [--repeats 5]

Three things run interleaved in one process on the same random-initialised GoogLeNet (eval mode) and
the same batch, each repeated --repeats times after a warm-up, median seconds per batch:

  maps          the attention model's maps: one forward with excitation layers, one backward of
                Eqn 6-7 to conv3 and inception3b, the forward CAM of inception5b, the fusion of Eqn 8
                (inetseg.attention.maps.attention_maps, minus image decoding and resizing)
  fwd_bwd       plain forward, then backward of the same one-hot logits into every parameter (what a
                training step computes)
  fwd_bwd_input plain forward, then backward of the one-hot logits to the input only (a gradient
                saliency map: no weight gradients; the tighter baseline)

ratio_vs_fwd_bwd = maps/s over fwd_bwd/s (goal >= 0.7); ratio_vs_fwd_bwd_input beside it. Also the
full per-image pseudo-label path (decode-free: resize, maps, Eqn 9 smoothing, Eqn 10) for scale.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np
import torch
import torch.nn.functional as F

from inetseg import storage
from inetseg.attention.cam import forward_cam
from inetseg.attention.excitation import googlenet_excitation
from inetseg.attention.fusion import fuse
from inetseg.attention.maps import Method, attention_maps, pseudo_label
from inetseg.models.classifier import build_classifier


def maps(model, x, lab0, size):
    out = googlenet_excitation(model, x, lab0, bias="ignore")
    with torch.no_grad():
        cam = forward_cam(out["inception5b"], model.fc.weight, lab0)
        return fuse(cam, out["conv3"], out["inception3b"], size)


def fwd_bwd(model, x, lab0):
    model.zero_grad(set_to_none=True)
    logits = model(x)
    logits.backward(F.one_hot(lab0, logits.shape[1]).to(logits.dtype))


def fwd_bwd_input(model, x, lab0):
    xi = x.detach().requires_grad_(True)
    logits = model(xi)
    torch.autograd.grad(logits, xi, grad_outputs=F.one_hot(lab0, logits.shape[1]).to(logits.dtype))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--width", type=float, default=1.0, help="GoogLeNet channel multiplier (1.0: the paper's net)")
    ap.add_argument("--input-size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_classifier(args.classes, args.width).eval()
    x = torch.randn(args.batch, 3, args.input_size, args.input_size)
    lab0 = torch.randint(0, args.classes, (args.batch,))
    size = (args.input_size, args.input_size)
    fns = {"maps": lambda: maps(model, x, lab0, size), "fwd_bwd": lambda: fwd_bwd(model, x, lab0),
           "fwd_bwd_input": lambda: fwd_bwd_input(model, x, lab0)}
    for fn in fns.values():  # warm-up: allocator, kernels
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(args.repeats):  # interleaved, so a noisy neighbour hits all three alike
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
        print(f"repeat {r + 1}/{args.repeats}: " + ", ".join(f"{k} {times[k][-1]:.3f}s" for k in fns), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    per_s = {k: args.batch / v for k, v in med.items()}

    # The stage's whole per-image path (what an actor does after decoding), for scale.
    rng = np.random.default_rng(0)
    rgb = [rng.integers(0, 256, (args.input_size, args.input_size, 3), dtype=np.uint8) for _ in range(args.batch)]
    labels = lab0.numpy() + 1
    method = Method()
    t0 = time.perf_counter()
    atts = attention_maps(model, rgb, labels, args.input_size, torch.device("cpu"), method)
    for a, im, lab in zip(atts, rgb, labels):
        pseudo_label(a, im, int(lab), method)
    full = args.batch / (time.perf_counter() - t0)

    result = {
        "ratio_vs_fwd_bwd": per_s["maps"] / per_s["fwd_bwd"],
        "ratio_vs_fwd_bwd_input": per_s["maps"] / per_s["fwd_bwd_input"],
        "maps_per_s": per_s["maps"], "fwd_bwd_per_s": per_s["fwd_bwd"],
        "fwd_bwd_input_per_s": per_s["fwd_bwd_input"], "pseudo_labels_per_s": full,
        "median_seconds": med, "seconds": times,
        "width": args.width, "input_size": args.input_size, "batch": args.batch, "classes": args.classes,
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "machine": platform.machine(),
        "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
    }
    storage.write_json(args.out, result)
    print(f"maps {per_s['maps']:.1f}/s, forward+backward {per_s['fwd_bwd']:.1f}/s -> ratio "
          f"{result['ratio_vs_fwd_bwd']:.2f}; vs input-only backward {per_s['fwd_bwd_input']:.1f}/s -> "
          f"{result['ratio_vs_fwd_bwd_input']:.2f}; full pseudo-label path {full:.1f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
