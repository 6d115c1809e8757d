"""A naive excitation backprop written straight from Eqn 6-7 (loops over neurons), for the tests.

The tiny network: conv3x3+BN+ReLU -> maxpool 2 -> [conv1x1+BN+ReLU | conv3x3+BN+ReLU] concatenated ->
global average pooling -> fc. Everything in float64 numpy, one image at a time, every parent neuron
and every child visited explicitly. Besides the maps it books where probability leaves the network:
`lost` (a parent with probability but no positive-weighted active child) and `to_bias` (the shares
absorbed biases take).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


class Tiny(nn.Module):
    """The network, as torch modules (the batched implementation runs on these)."""

    def __init__(self, classes: int = 3):
        super().__init__()
        self.c1, self.bn1 = nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d(2)
        self.ca, self.bna = nn.Conv2d(4, 3, 1, bias=False), nn.BatchNorm2d(3)
        self.cb, self.bnb = nn.Conv2d(4, 2, 3, padding=1, bias=False), nn.BatchNorm2d(2)
        self.fc = nn.Linear(5, classes)

    def randomise(self, seed: int) -> Tiny:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            for bn in (self.bn1, self.bna, self.bnb):
                bn.running_mean.copy_(torch.randn(bn.num_features, generator=g) * 0.1)
                bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        return self.eval()


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[np.ndarray, np.ndarray]:
    w = conv.weight.detach().double().numpy()
    g, b = bn.weight.detach().double().numpy(), bn.bias.detach().double().numpy()
    mu, var = bn.running_mean.double().numpy(), bn.running_var.double().numpy()
    s = g / np.sqrt(var + bn.eps)
    return w * s[:, None, None, None], b - mu * s


def _conv_fwd(a: np.ndarray, w: np.ndarray, b: np.ndarray, pad: int) -> np.ndarray:
    co, ci, kh, kw = w.shape
    _, h, wd = a.shape
    out = np.zeros((co, h, wd))
    for o in range(co):
        for y in range(h):
            for x in range(wd):
                s = b[o]
                for c in range(ci):
                    for dy in range(kh):
                        for dx in range(kw):
                            yy, xx = y + dy - pad, x + dx - pad
                            if 0 <= yy < h and 0 <= xx < wd:
                                s += w[o, c, dy, dx] * a[c, yy, xx]
                out[o, y, x] = max(s, 0.0)
    return out


def _conv_eb(a, w, b, pad, p_out, absorb, book):
    """Eqn 6-7 for one conv layer: every parent (o, y, x), every child (c, yy, xx)."""
    co, ci, kh, kw = w.shape
    _, h, wd = a.shape
    p_in = np.zeros_like(a)
    for o in range(co):
        for y in range(h):
            for x in range(wd):
                pj = p_out[o, y, x]
                if pj == 0:
                    continue
                kids = []
                for c in range(ci):
                    for dy in range(kh):
                        for dx in range(kw):
                            yy, xx = y + dy - pad, x + dx - pad
                            if 0 <= yy < h and 0 <= xx < wd and w[o, c, dy, dx] >= 0:
                                kids.append((c, yy, xx, w[o, c, dy, dx] * a[c, yy, xx]))
                bias_share = max(b[o], 0.0) if absorb else 0.0
                z = sum(k[3] for k in kids) + bias_share
                if z <= 0:
                    book["lost"] += pj
                    continue
                for c, yy, xx, v in kids:
                    p_in[c, yy, xx] += pj * v / z
                book["to_bias"] += pj * bias_share / z
    return p_in


def reference(model: Tiny, image: np.ndarray, label: int, absorb: bool) -> dict:
    """Maps at every layer for one image (3 x H x W), plus the probability bookkeeping."""
    w1, b1 = _fold(model.c1, model.bn1)
    wa, ba = _fold(model.ca, model.bna)
    wb, bb = _fold(model.cb, model.bnb)
    wf, bf = model.fc.weight.detach().double().numpy(), model.fc.bias.detach().double().numpy()
    x = image.astype(np.float64)
    a1 = _conv_fwd(x, w1, b1, 1)
    c, h, wd = a1.shape
    pooled, arg = np.zeros((c, h // 2, wd // 2)), {}
    for ch in range(c):
        for y in range(h // 2):
            for xx in range(wd // 2):
                win = [(a1[ch, 2 * y + i, 2 * xx + j], (2 * y + i, 2 * xx + j)) for i in range(2) for j in range(2)]
                best = max(win, key=lambda t: t[0])  # ties only among zeros, which carry no probability
                pooled[ch, y, xx], arg[(ch, y, xx)] = best
    fa, fb = _conv_fwd(pooled, wa, ba, 0), _conv_fwd(pooled, wb, bb, 1)
    cat = np.concatenate([fa, fb])
    gap = cat.mean(axis=(1, 2))
    book = {"lost": 0.0, "to_bias": 0.0}
    # fc: parents are the classes, one-hot on the label
    p_gap = np.zeros_like(gap)
    for j in range(wf.shape[0]):
        pj = 1.0 if j == label else 0.0
        if pj == 0:
            continue
        bias_share = max(bf[j], 0.0) if absorb else 0.0
        z = sum(wf[j, i] * gap[i] for i in range(len(gap)) if wf[j, i] >= 0) + bias_share
        if z <= 0:
            book["lost"] += pj
            continue
        for i in range(len(gap)):
            if wf[j, i] >= 0:
                p_gap[i] += pj * wf[j, i] * gap[i] / z
        book["to_bias"] += pj * bias_share / z
    # global average pooling: parent c, children (c, y, x) with weight 1/(hw)
    p_cat = np.zeros_like(cat)
    n = cat.shape[1] * cat.shape[2]
    for ch in range(cat.shape[0]):
        z = sum(cat[ch].ravel()) / n
        if p_gap[ch] == 0:
            continue
        if z <= 0:
            book["lost"] += p_gap[ch]
            continue
        p_cat[ch] = p_gap[ch] * (cat[ch] / n) / z
    # concatenation splits; the two branches share their input, so their probabilities add up
    p_pooled = (_conv_eb(pooled, wa, ba, 0, p_cat[:3], absorb, book)
                + _conv_eb(pooled, wb, bb, 1, p_cat[3:], absorb, book))
    p_a1 = np.zeros_like(a1)
    for (ch, y, xx), (yy, xw) in arg.items():
        p_a1[ch, yy, xw] += p_pooled[ch, y, xx]
    p_x = _conv_eb(x, w1, b1, 1, p_a1, absorb, book)
    return {"input": p_x, "conv1": p_a1, "pool": p_pooled, "concat": p_cat, "book": book,
            "logits": gap @ wf.T + bf}


def batched(model: Tiny, images: torch.Tensor, labels: torch.Tensor, bias: str) -> dict:
    """The same maps from inetseg's batched implementation (all images in one pass)."""
    import torch.nn.functional as F

    from inetseg.attention import excitation as E

    x = images.clone().requires_grad_(True)
    a1 = F.relu(E.eb_conv(x, model.c1, model.bn1, bias))
    p = model.pool(a1)
    cat = torch.cat([F.relu(E.eb_conv(p, model.ca, model.bna, bias)),
                     F.relu(E.eb_conv(p, model.cb, model.bnb, bias))], 1)
    logits = E.eb_linear(E.eb_global_avgpool(cat), model.fc, bias)
    onehot = F.one_hot(labels, logits.shape[1]).to(logits.dtype)
    g = torch.autograd.grad(logits, [x, a1, p, cat], grad_outputs=onehot)
    return {"input": g[0], "conv1": g[1], "pool": g[2], "concat": g[3], "logits": logits.detach()}
