"""Excitation backprop (Eqn 6-7) against an implementation written from the equations (tests/eb_reference.py)."""
import numpy as np
import pytest
import torch
from eb_reference import Tiny, batched, reference

from inetseg.attention import excitation as E
from inetseg.models.classifier import build_classifier

LAYERS = ("input", "conv1", "pool", "concat")


@pytest.mark.parametrize("bias", ["ignore", "absorb"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_matches_the_naive_equations(seed, bias):
    model = Tiny().randomise(seed).double()
    g = torch.Generator().manual_seed(100 + seed)
    images = torch.rand(4, 3, 8, 8, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, seed % 3])
    got = batched(model, images, labels, bias)
    for n in range(len(images)):
        ref = reference(model, images[n].numpy(), int(labels[n]), absorb=bias == "absorb")
        np.testing.assert_allclose(got["logits"][n].numpy(), ref["logits"], atol=1e-10)  # the forward is the real net
        for layer in LAYERS:
            np.testing.assert_allclose(got[layer][n].numpy(), ref[layer], atol=1e-5, rtol=0, err_msg=layer)
        # Where the probability went: into the image, into absorbed biases, or lost at orphaned parents.
        assert ref["input"].sum() + ref["book"]["to_bias"] + ref["book"]["lost"] == pytest.approx(1.0, abs=1e-9)


def test_probability_is_conserved_layer_by_layer_without_orphans():
    model = Tiny().randomise(3).double()
    images = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0])
    got = batched(model, images, labels, "ignore")
    for n in range(len(images)):
        assert reference(model, images[n].numpy(), int(labels[n]), absorb=False)["book"]["lost"] == 0
    for layer in LAYERS:
        np.testing.assert_allclose(got[layer].flatten(1).sum(1).numpy(), 1.0, atol=1e-9, err_msg=layer)


def test_a_parent_without_positive_active_children_loses_exactly_its_probability():
    """One branch channel whose weights are all negative but whose bias keeps it active: it receives
    probability from above and has nobody to pass it to (bias ignored), so exactly that much is lost."""
    model = Tiny().randomise(4).double()
    with torch.no_grad():
        model.ca.weight[0] = -model.ca.weight[0].abs() - 0.1
        model.bna.bias[0] = 5.0  # always active
        model.fc.weight.abs_()  # every channel gets probability from the class
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    labels = torch.tensor([0, 1])
    got = batched(model, images, labels, "ignore")
    for n in range(2):
        ref = reference(model, images[n].numpy(), int(labels[n]), absorb=False)
        lost_here = got["concat"][n, 0].sum().item()  # the orphaned channel's whole probability
        assert lost_here > 0.01
        assert ref["book"]["lost"] == pytest.approx(lost_here, abs=1e-9)
        assert got["pool"][n].sum().item() == pytest.approx(1.0 - lost_here, abs=1e-9)
        assert got["input"][n].sum().item() == pytest.approx(1.0 - ref["book"]["lost"], abs=1e-9)
    # With the bias absorbed it is a positive-weighted active child: the probability goes to it instead.
    ref = reference(model, images[0].numpy(), 0, absorb=True)
    assert ref["book"]["to_bias"] > 0


@pytest.fixture(scope="module")
def googlenet():
    torch.manual_seed(0)
    m = build_classifier(5, 0.25)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so the folding is exercised
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 2.0)
                mod.bias.uniform_(-0.1, 0.1)
    return m.eval()


def test_googlenet_maps_shapes_logits_and_conservation(googlenet):
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 3, 4])
    out = E.googlenet_excitation(googlenet, x, labels, bias="ignore")
    assert out["conv3"].shape == (3, 16, 16) and out["inception3b"].shape == (3, 8, 8)  # strides 4 and 8
    torch.testing.assert_close(out["logits"], googlenet.forward_features(x)["logits"], atol=1e-5, rtol=1e-5)
    for k in ("conv3", "inception3b"):
        assert (out[k] >= 0).all()
        torch.testing.assert_close(out[k].flatten(1).sum(1), torch.ones(3), atol=1e-4, rtol=0)



def test_googlenet_maps_do_not_mix_images_of_a_batch():
    # (A fresh model: the perturbed BatchNorm above leaves whole regions at the same bias-only value,
    # and max pooling may break such exact ties differently for another batch size.)
    torch.manual_seed(1)
    m = build_classifier(5, 0.25).eval().double()
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    labels = torch.tensor([0, 3, 4])
    out = E.googlenet_excitation(m, x, labels, bias="ignore")
    one = E.googlenet_excitation(m, x[1:2], labels[1:2], bias="ignore")
    for k in ("conv3", "inception3b"):
        torch.testing.assert_close(one[k][0], out[k][1], atol=1e-9, rtol=1e-6)


def test_googlenet_excitation_refuses_train_mode_and_unknown_bias(googlenet):
    x, y = torch.rand(1, 3, 32, 32), torch.tensor([0])
    with pytest.raises(ValueError, match="bias must be one of"):
        E.googlenet_excitation(googlenet, x, y, bias="maybe")
    googlenet.train()
    try:
        with pytest.raises(ValueError, match="eval mode"):
            E.googlenet_excitation(googlenet, x, y)
    finally:
        googlenet.eval()

