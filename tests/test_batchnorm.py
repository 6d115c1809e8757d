"""Precise BatchNorm recalibration and the drop-last rule of the training loops (pure torch, no Ray)."""
import pytest
import torch
from torch import nn

from inetseg.models.classifier import build_classifier
from inetseg.train import batchnorm, worker


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1), nn.BatchNorm2d(2))


def test_recalibration_gives_the_plain_average_of_batch_statistics():
    net = _net()
    net[1].running_mean.fill_(5.0)  # stale statistics from "training"
    batches = [torch.randn(8, 3, 10, 10) * (i + 1) + i for i in range(3)]
    seen = batchnorm.recalibrate_batchnorm(net, iter(batches))
    assert seen == 24
    with torch.no_grad():
        feats = [net[0](b) for b in batches]
    means = torch.stack([f.mean(dim=(0, 2, 3)) for f in feats]).mean(0)
    vars_ = torch.stack([f.transpose(0, 1).reshape(4, -1).var(dim=1, unbiased=True) for f in feats]).mean(0)
    assert torch.allclose(net[1].running_mean, means, atol=1e-5)
    assert torch.allclose(net[1].running_var, vars_, rtol=1e-4)
    assert net[1].momentum == 0.1  # the layer's momentum is given back for later training


def test_after_recalibration_eval_mode_matches_train_mode_on_the_same_batch():
    model = build_classifier(3, 0.25)
    x = torch.randn(64, 3, 64, 64)
    model.train()
    with torch.no_grad():
        for _ in range(5):  # running stats of a different input distribution
            model(x * 3 + 2)
        for m in model.modules():  # dropout off: only BatchNorm should differ between the modes
            if isinstance(m, nn.Dropout):
                m.eval()
        train_out = model(x)
    model.eval()
    with torch.no_grad():
        stale = model(x)
    batchnorm.recalibrate_batchnorm(model, [x])
    assert not model.training  # mode restored
    with torch.no_grad():
        fresh = model(x)
    err_fresh, err_stale = (fresh - train_out).abs().max().item(), (stale - train_out).abs().max().item()
    assert err_fresh < 0.05 * err_stale, (err_fresh, err_stale)  # unbiased vs biased variance: close, not equal


def test_nothing_to_recalibrate_on_leaves_the_statistics_alone():
    net = _net()
    net[1].running_mean.fill_(1.5)
    assert batchnorm.recalibrate_batchnorm(net, iter([])) == 0
    assert batchnorm.recalibrate_batchnorm(net, [torch.randn(1, 3, 8, 8)]) == 0  # a single image has no variance
    assert torch.all(net[1].running_mean == 1.5)


def test_recalibration_reaches_through_a_wrapper():
    class Wrapper(nn.Module):  # what DDP looks like from outside: the net is .module
        def __init__(self, module):
            super().__init__()
            self.module = module

    net = _net()
    assert batchnorm.recalibrate_batchnorm(Wrapper(net), [torch.randn(4, 3, 8, 8)]) == 4
    assert net[1].num_batches_tracked.item() == 1
    batchnorm.average_batchnorm_across_ranks(net)  # no process group: a no-op


@pytest.mark.parametrize("n_train,batch,world,expected", [
    (1000, 64, 1, (15, True)),   # 15 full batches, the 40 left over are dropped
    (86, 16, 2, (5, True)),      # 43 per rank, batches of 8: 5 full, 3 dropped
    (10, 64, 1, (1, False)),     # fewer images than a batch: keep the short one, or nothing trains
    (100, 64, 4, (1, True)),  # 25 per rank, batches of 16
])
def test_steps_per_epoch_drops_only_a_short_last_batch(n_train, batch, world, expected):
    assert worker.steps_per_epoch(n_train, batch, world) == expected
