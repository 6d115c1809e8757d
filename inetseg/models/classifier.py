"""The classifier: torchvision's GoogLeNet (weights=None), optionally thinned by a channel multiplier."""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models.googlenet import BasicConv2d, GoogLeNet, Inception

# torchvision's inception configs: (in, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj).
_INCEPTIONS = {
    "inception3a": (192, 64, 96, 128, 16, 32, 32),
    "inception3b": (256, 128, 128, 192, 32, 96, 64),
    "inception4a": (480, 192, 96, 208, 16, 48, 64),
    "inception4b": (512, 160, 112, 224, 24, 64, 64),
    "inception4c": (512, 128, 128, 256, 24, 64, 64),
    "inception4d": (512, 112, 144, 288, 32, 64, 64),
    "inception4e": (528, 256, 160, 320, 32, 128, 128),
    "inception5a": (832, 256, 160, 320, 32, 128, 128),
    "inception5b": (832, 384, 192, 384, 48, 128, 128),
}
STAGES_BEFORE_POOL5 = ("inception4a", "inception4b", "inception4c", "inception4d", "inception4e")


def scale_channels(c: int, width: float) -> int:
    """Scaled channel count, a multiple of 8 (at least 8)."""
    return max(8, int(round(c * width / 8)) * 8)


class Classifier(GoogLeNet):
    """torchvision's GoogLeNet with a feature API (as timm's forward_features): the maps attention and the
    segmenter read, from one forward pass. Same modules and state_dict keys as GoogLeNet."""

    def stem(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """conv1 .. inception4e, as torchvision's forward runs them. Shapes for an N x 3 x H x W input."""
        x = self.conv1(x)          # N x 64w x H/2 x W/2
        x = self.maxpool1(x)       # N x 64w x H/4
        x = self.conv2(x)          # N x 64w x H/4
        conv3 = self.conv3(x)      # N x 192w x H/4  (counterpart of Caffe's conv2/norm2)
        x = self.maxpool2(conv3)   # N x 192w x H/8
        x = self.inception3a(x)    # N x 256w x H/8
        i3b = self.inception3b(x)  # N x 480w x H/8
        x = self.maxpool3(i3b)     # N x 480w x H/16
        for name in STAGES_BEFORE_POOL5:
            x = getattr(self, name)(x)
        return {"conv3": conv3, "inception3b": i3b, "inception4e": x}  # 4e: N x 832w x H/16

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """One forward pass returning the maps attention needs and the logits (equal to self(x))."""
        out = self.stem(x)
        y = self.maxpool4(out["inception4e"])  # N x 832w x H/32
        y = self.inception5a(y)
        y = self.inception5b(y)                # N x 1024w x H/32: f_{L-3} of Eqn 2
        out["inception5b"] = y
        pooled = torch.flatten(self.avgpool(y), 1)
        out["logits"] = self.fc(self.dropout(pooled))
        return out

    def feature_channels(self) -> dict[str, int]:
        """Channels of the feature maps forward_features returns."""
        def out(block: Inception) -> int:
            return sum(b[-1].conv.out_channels if isinstance(b, nn.Sequential) else b.conv.out_channels
                       for b in (block.branch1, block.branch2, block.branch3, block.branch4))
        return {"conv3": self.conv3.conv.out_channels, "inception3b": out(self.inception3b),
                "inception4e": out(self.inception4e), "inception5b": out(self.inception5b)}


def build_classifier(num_classes: int, width: float = 1.0) -> Classifier:
    """GoogLeNet with random weights (the task forbids anything trained with human labels).

    width == 1.0 is exactly torchvision.models.googlenet(weights=None) (same constructor, same init); width < 1
    keeps the topology and module names (so attention hooks work) with every channel count scaled, for demos.
    """
    model = Classifier(num_classes=num_classes, aux_logits=False, transform_input=False, init_weights=True)
    if width == 1.0:
        return model
    out_of = {}  # concatenated output width of each scaled inception block
    model.conv1 = BasicConv2d(3, scale_channels(64, width), kernel_size=7, stride=2, padding=3)
    model.conv2 = BasicConv2d(scale_channels(64, width), scale_channels(64, width), kernel_size=1)
    model.conv3 = BasicConv2d(scale_channels(64, width), scale_channels(192, width), kernel_size=3, padding=1)
    prev = scale_channels(192, width)
    for name, (_, *chs) in _INCEPTIONS.items():
        c1, c3r, c3, c5r, c5, pp = (scale_channels(c, width) for c in chs)
        setattr(model, name, Inception(prev, c1, c3r, c3, c5r, c5, pp))
        out_of[name] = c1 + c3 + c5 + pp
        prev = out_of[name]
    model.fc = nn.Linear(prev, num_classes)
    _init(model)
    return model


def _init(model: nn.Module) -> None:
    """torchvision's GoogLeNet initialisation (truncated normal, std 0.01) for the rebuilt layers."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
