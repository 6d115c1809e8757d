"""The segmenter: a DeepLab-v3+-style head (ASPP + low-level decoder) on the classifier's backbone."""
from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from inetseg.models.classifier import build_classifier, scale_channels

BACKBONE = ("conv1", "conv2", "conv3", "inception3a", "inception3b", "inception4a", "inception4b",
            "inception4c", "inception4d", "inception4e")


def _cbr(cin: int, cout: int, k: int = 1, dilation: int = 1) -> nn.Sequential:
    """conv -> BN -> ReLU."""
    pad = dilation * (k // 2)
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=pad, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1, dilated 3x3s and image pooling, concatenated and projected."""

    def __init__(self, cin: int, cout: int, rates: tuple[int, ...]):
        super().__init__()
        self.branches = nn.ModuleList([_cbr(cin, cout, 1)] + [_cbr(cin, cout, 3, r) for r in rates])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False), nn.ReLU(inplace=True))
        self.project = nn.Sequential(_cbr(cout * (len(rates) + 2), cout, 1), nn.Dropout(0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        outs = [b(x) for b in self.branches]
        outs.append(F.interpolate(self.pool(x), size=size, mode="bilinear", align_corners=False))
        return self.project(torch.cat(outs, 1))


class Segmenter(nn.Module):
    """Backbone conv1..inception4e (stride 16) -> ASPP -> fuse conv3 (stride 4) -> K+1 logits at input size."""

    def __init__(self, num_classes: int, width: float = 1.0, aspp_rates: tuple[int, ...] = (6, 12, 18),
                 aspp_channels: int = 256):
        super().__init__()
        self.backbone = build_classifier(num_classes, width)
        # The classifier's pooled top (inception5*, fc) is not part of the segmenter.
        for name in ("inception5a", "inception5b", "fc"):
            setattr(self.backbone, name, nn.Identity())
        ch = feature_channels_of(num_classes, width)
        mid = max(32, scale_channels(aspp_channels, width))
        low = max(16, scale_channels(48, width))
        self.aspp = ASPP(ch["inception4e"], mid, tuple(aspp_rates))
        self.reduce = _cbr(ch["conv3"], low, 1)
        self.decoder = nn.Sequential(_cbr(mid + low, mid, 3), _cbr(mid, mid, 3))
        self.classifier = nn.Conv2d(mid, num_classes + 1, 1)

    @classmethod
    def from_classifier(cls, classifier: nn.Module, num_classes: int, width: float = 1.0,
                        aspp_rates: tuple[int, ...] = (6, 12, 18)) -> Segmenter:
        """A segmenter whose backbone starts from a trained classifier's weights."""
        seg = cls(num_classes, width, aspp_rates)
        state = {k: v for k, v in classifier.state_dict().items() if k.split(".")[0] in BACKBONE}
        missing = seg.backbone.load_state_dict(state, strict=False)
        assert not [k for k in missing.missing_keys if k.split(".")[0] in BACKBONE], missing
        return seg

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        return self.backbone.parameters()

    def head_parameters(self) -> Iterator[nn.Parameter]:
        for m in (self.aspp, self.reduce, self.decoder, self.classifier):
            yield from m.parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.backbone.stem(x)
        high = self.aspp(f["inception4e"])                        # N x mid x H/16 x W/16
        low = self.reduce(f["conv3"])                             # N x low x H/4 x W/4
        high = F.interpolate(high, size=low.shape[-2:], mode="bilinear", align_corners=False)
        y = self.classifier(self.decoder(torch.cat([high, low], 1)))  # N x (K+1) x H/4 x W/4
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


def feature_channels_of(num_classes: int, width: float) -> dict[str, int]:
    """Channel counts of the backbone maps for a given width (built once on the meta device)."""
    with torch.device("meta"):
        return build_classifier(num_classes, width).feature_channels()
