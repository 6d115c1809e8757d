"""Excitation backprop (Eqn 6-7): top-down marginal winning probabilities, batched through autograd.

Each weighted layer f_{l+1}^j = sum_i w^{j,i} f_l^i passes a parent's probability to its children in
proportion to w^{j,i}+ f_l^i (Eqn 6), summed over parents (Eqn 7). For a layer with positive weights
W+ and input activations a that is, for all neurons at once,

    P_in = a * (W+^T (P_out / (W+ a)))

i.e. a forward pass with W+, an element-wise division and a transposed pass with W+ (the input
gradient of the same convolution). `ExcitationFn` puts exactly this in the backward of an op whose
forward is the real layer, so one `torch.autograd.grad` call from a one-hot on the output carries
probabilities through the whole network, every image of a batch at once. Max pooling sends a
parent's probability to its winning child (autograd's own max-pool backward does that), ReLU and
dropout pass it through unchanged (a dead neuron already received nothing: P is proportional to its
activation), a concatenation splits it, and a tensor read by several branches sums what the branches
send back (Eqn 7's sum over parents).

The bias: the paper's footnote absorbs it into the weights, i.e. a constant-1 child whose weight is
the bias. With bias="absorb" a positive bias takes its share of every parent's probability and that
share leaves the map (the constant child is not a pixel); with bias="ignore" (Zhang et al.'s original
formulation) it takes none. Either way a parent with no positive-weighted active child passes nothing
on: its probability is lost (`excitation` reports how much). BatchNorm (eval statistics) is folded into
the convolution before it, so W+ is the positive part of the folded weight.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BIAS_MODES = ("absorb", "ignore")


def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of conv followed by eval-mode BatchNorm as one convolution."""
    w = conv.weight
    b = conv.bias if conv.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
    if bn is None:
        return w, b
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return w * scale[:, None, None, None], (b - bn.running_mean) * scale + bn.bias


class ExcitationFn(torch.autograd.Function):
    """Forward: the real layer (op with weight, bias). Backward: Eqn 6-7 with the positive weights.

    `op` is F.conv2d-like: op(x, w, b) with the layer's stride/padding bound; `op_t` maps an output-shaped
    tensor back to the input through the same op's transpose with the positive weights.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, op, op_t, absorb_bias):
        wp = weight.clamp(min=0)
        bp = bias.clamp(min=0) if absorb_bias else None
        ctx.save_for_backward(x, wp, bp if bp is not None else torch.empty(0))
        ctx.op, ctx.op_t, ctx.absorb_bias = op, op_t, absorb_bias
        return op(x, weight, bias)

    @staticmethod
    def backward(ctx, p_out):
        x, wp, bp = ctx.saved_tensors
        z = ctx.op(x, wp, bp if ctx.absorb_bias else None)  # sum_i w+ a_i (+ b+): the normaliser 1/S_j
        ratio = torch.where(z > 0, p_out / z.clamp(min=1e-30), torch.zeros_like(p_out))
        p_in = x * ctx.op_t(ratio, wp, x.shape)
        return p_in, None, None, None, None, None


def _conv_ops(conv: nn.Conv2d):
    kw = dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups)

    def op(x, w, b):
        return F.conv2d(x, w, b, **kw)

    def op_t(y, w, shape):
        return torch.nn.grad.conv2d_input(shape, w, y, **kw)

    return op, op_t


def _linear_op(x, w, b):
    return F.linear(x, w, b)


def _linear_op_t(y, w, shape):
    return y @ w


def eb_conv(x: torch.Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d | None = None, bias: str = "absorb") -> torch.Tensor:
    """conv (+ folded BN) whose backward is excitation backprop; the caller applies the ReLU."""
    w, b = fold_bn(conv, bn)
    op, op_t = _conv_ops(conv)
    return ExcitationFn.apply(x, w.detach(), b.detach(), op, op_t, bias == "absorb")


def eb_linear(x: torch.Tensor, fc: nn.Linear, bias: str = "absorb") -> torch.Tensor:
    """fc layer whose backward is excitation backprop."""
    b = fc.bias if fc.bias is not None else torch.zeros(fc.out_features, device=x.device, dtype=x.dtype)
    return ExcitationFn.apply(x, fc.weight.detach(), b.detach(), _linear_op, _linear_op_t, bias == "absorb")


def eb_global_avgpool(x: torch.Tensor) -> torch.Tensor:
    """Global average pooling (N x C x h x w -> N x C): a layer with positive weights 1/(hw), no bias."""
    n, c, h, w = x.shape
    flat = x.reshape(n * c, 1, h * w)
    weight = torch.full((1, 1, h * w), 1.0 / (h * w), dtype=x.dtype, device=x.device)

    def op(t: torch.Tensor, wt: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.conv1d(t, wt, b)

    def op_t(y: torch.Tensor, wt: torch.Tensor, shape: list[int]) -> torch.Tensor:
        return torch.nn.grad.conv1d_input(shape, wt, y)

    out = ExcitationFn.apply(flat, weight, torch.zeros(1, dtype=x.dtype, device=x.device), op, op_t, False)
    return out.reshape(n, c)


def basic_conv(x: torch.Tensor, block: nn.Module, bias: str) -> torch.Tensor:
    """torchvision's BasicConv2d (conv -> BN -> ReLU) in excitation mode."""
    return F.relu(eb_conv(x, block.conv, block.bn, bias))


def inception(x: torch.Tensor, block: nn.Module, bias: str) -> torch.Tensor:
    """torchvision's Inception block in excitation mode: four branches over the same input, concatenated."""
    b1 = basic_conv(x, block.branch1, bias)
    b2 = basic_conv(basic_conv(x, block.branch2[0], bias), block.branch2[1], bias)
    b3 = basic_conv(basic_conv(x, block.branch3[0], bias), block.branch3[1], bias)
    b4 = basic_conv(block.branch4[0](x), block.branch4[1], bias)  # max pool: winner takes the probability
    return torch.cat([b1, b2, b3, b4], 1)


def googlenet_excitation(model: nn.Module, images: torch.Tensor, labels0: torch.Tensor, bias: str = "absorb",
                         layers: tuple[str, ...] = ("conv3", "inception3b")) -> dict[str, torch.Tensor]:
    """Excitation maps of each image's class (labels0: 0-based) at `layers` of a torchvision GoogLeNet.

    Returns {layer: N x h x w} (probability summed over channels: B_2 at conv3, stride 4; B_3b at
    inception3b, stride 8), plus "inception5b" (N x C x h x w features for the forward CAM) and "logits",
    all from the same forward pass. The model must be in eval mode (BatchNorm folded with its running
    statistics, dropout off).
    """
    if bias not in BIAS_MODES:
        raise ValueError(f"bias must be one of {BIAS_MODES}, got {bias!r}")
    if model.training:
        raise ValueError("excitation backprop needs the model in eval mode (BatchNorm statistics, no dropout)")
    m = model
    with torch.no_grad():  # nothing below conv3 is needed: no graph there
        x = m.maxpool1(m.conv1(images))
        x = m.conv2(x)
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        conv3 = basic_conv(x, m.conv3, bias)
        y = inception(m.maxpool2(conv3), m.inception3a, bias)
        i3b = inception(y, m.inception3b, bias)
        y = m.maxpool3(i3b)
        for name in ("inception4a", "inception4b", "inception4c", "inception4d", "inception4e"):
            y = inception(y, getattr(m, name), bias)
        y = m.maxpool4(y)
        y = inception(y, m.inception5a, bias)
        i5b = inception(y, m.inception5b, bias)
        logits = eb_linear(eb_global_avgpool(i5b), m.fc, bias)  # dropout: identity in eval
        taps = {"conv3": conv3, "inception3b": i3b}
        wanted = [taps[k] for k in layers]
        onehot = F.one_hot(labels0.long(), logits.shape[1]).to(logits.dtype)
        grads = torch.autograd.grad(logits, wanted, grad_outputs=onehot)
    out = {k: g.sum(1).detach() for k, g in zip(layers, grads)}
    out["inception5b"], out["logits"] = i5b.detach(), logits.detach()
    return out
