"""Models on tiny random tensors: shapes, no NaN, every parameter trained, torchvision parity."""
import torch
import torchvision

from inetseg.models.classifier import build_classifier
from inetseg.models.segmenter import Segmenter


def test_width_one_is_torchvision_googlenet():
    torch.manual_seed(0)
    ours = build_classifier(7, 1.0)
    torch.manual_seed(0)
    ref = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True, num_classes=7,
                                       transform_input=False)
    assert isinstance(ours, type(ref))  # GoogLeNet plus a feature API
    a, b = ours.state_dict(), ref.state_dict()
    assert list(a) == list(b)  # same keys: a torchvision GoogLeNet checkpoint loads, and ours loads there
    assert all(torch.equal(a[k], b[k]) for k in a)  # same constructor, same initialisation


def test_classifier_shapes_and_gradients():
    torch.manual_seed(0)
    m = build_classifier(4, 0.25)
    x = torch.randn(2, 3, 64, 64)
    out = m(x)
    assert out.shape == (2, 4) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    m.eval()
    f = m.forward_features(x)
    assert f["conv3"].shape[-1] == 16 and f["inception3b"].shape[-1] == 8 and f["inception5b"].shape[-1] == 2
    assert torch.allclose(f["logits"], m(x), atol=1e-5)


def test_segmenter_from_classifier():
    torch.manual_seed(0)
    clf = build_classifier(3, 0.25)
    seg = Segmenter.from_classifier(clf, 3, 0.25, (2, 4))
    assert torch.equal(seg.backbone.conv3.conv.weight, clf.conv3.conv.weight)
    x = torch.randn(2, 3, 64, 64)
    y = seg(x)
    assert y.shape == (2, 4, 64, 64) and torch.isfinite(y).all()
    y.mean().backward()
    assert all(p.grad is not None for p in seg.head_parameters())
    used = {n for n, p in seg.named_parameters() if p.grad is not None}
    assert any(n.startswith("backbone.inception4e") for n in used)
