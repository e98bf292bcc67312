"""Gradient reversal and the batch discriminator."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from scvi_ext.nn import ADVERSARIAL_LOSSES, BatchDiscriminator, GradientReversal, grad_reverse


@pytest.mark.parametrize("lambd", [0.0, 1.0, 0.3, torch.tensor(2.5)])
def test_grad_reverse_identity_forward_negated_backward(lambd):
    x = torch.randn(4, 3, requires_grad=True)
    w = torch.randn(4, 3)
    y = grad_reverse(x, lambd)
    assert torch.equal(y, x)
    (y * w).sum().backward()
    torch.testing.assert_close(x.grad, -float(lambd) * w)


def test_gradient_reversal_module_lambda_is_settable():
    grl = GradientReversal(1.0)
    x = torch.ones(3, requires_grad=True)
    grl(x).sum().backward()
    torch.testing.assert_close(x.grad, -torch.ones(3))
    grl.lambd = 0.25
    x.grad = None
    grl(x).sum().backward()
    torch.testing.assert_close(x.grad, -0.25 * torch.ones(3))
    assert "lambd=0.25" in repr(grl)


def test_discriminator_architecture_and_ce():
    disc = BatchDiscriminator(n_input=6, n_batches=3)  # scCRAFT's D: 2 hidden layers of 128, no norm
    linears = [m for m in disc.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(6, 128), (128, 128), (128, 3)]
    assert not any(isinstance(m, torch.nn.BatchNorm1d | torch.nn.Dropout) for m in disc.modules())
    z = torch.randn(10, 6)
    b = torch.randint(0, 3, (10, 1)).float()  # scvi registries hand float codes
    logits = disc(z)
    assert logits.shape == (10, 3)
    torch.testing.assert_close(disc.loss(z, b), F.cross_entropy(logits, b[:, 0].long()))
    torch.testing.assert_close(
        disc.loss(z, b, reduction="sum"), F.cross_entropy(logits, b[:, 0].long(), reduction="sum")
    )
    assert disc.loss(z, b, reduction="none").shape == (10,)
    acc = disc.accuracy(z, b)
    torch.testing.assert_close(acc, (logits.argmax(1) == b[:, 0]).float().mean())
    linear = BatchDiscriminator(6, 2, n_layers=0)
    assert [type(m) for m in linear.children()] == [torch.nn.Linear]


def test_adversarial_objectives_by_hand():
    disc = BatchDiscriminator(4, 3, n_layers=0)
    z = torch.randn(5, 4)
    b = torch.tensor([0, 1, 2, 0, 1])
    log_p = F.log_softmax(disc(z), dim=1)
    neg_ce = disc.adversarial_loss(z, b, ADVERSARIAL_LOSSES.NEG_CE)
    torch.testing.assert_close(neg_ce, -disc.loss(z, b))
    torch.testing.assert_close(disc.adversarial_loss(z, b, "uniform"), -(log_p.mean(1)).mean())
    others = torch.ones(5, 3)
    others[torch.arange(5), b] = 0
    torch.testing.assert_close(disc.adversarial_loss(z, b, "flipped"), -((log_p * others).sum(1) / 2).mean())
    with torch.no_grad():  # a maximally unsure discriminator: uniform loss = log K
        disc.head.weight.zero_()
        disc.head.bias.zero_()
    assert float(disc.adversarial_loss(z, b, "uniform").detach()) == pytest.approx(
        float(torch.log(torch.tensor(3.0)))
    )


def test_gradient_reversal_flag_reverses_grad_into_latent():
    torch.manual_seed(0)
    plain = BatchDiscriminator(4, 2, n_hidden=8, n_layers=1)
    reversed_ = BatchDiscriminator(4, 2, n_hidden=8, n_layers=1, gradient_reversal=True, grl_lambda=0.5)
    reversed_.load_state_dict(plain.state_dict())
    z1 = torch.randn(6, 4, requires_grad=True)
    z2 = z1.detach().clone().requires_grad_(True)
    b = torch.tensor([0, 1, 0, 1, 0, 1])
    plain.loss(z1, b).backward()
    reversed_.loss(z2, b).backward()
    torch.testing.assert_close(z2.grad, -0.5 * z1.grad)
    for p1, p2 in zip(plain.parameters(), reversed_.parameters(), strict=True):
        torch.testing.assert_close(p1.grad, p2.grad)  # the classifier itself learns normally
    z3 = z1.detach().clone().requires_grad_(True)
    reversed_.loss(z3, b, reverse=False).backward()  # bypass on request
    torch.testing.assert_close(z3.grad, z1.grad)


def test_discriminator_bad_inputs():
    with pytest.raises(ValueError, match="n_batches"):
        BatchDiscriminator(4, 1)
    with pytest.raises(ValueError, match="dropout"):
        BatchDiscriminator(4, 2, dropout=1.5)
    disc = BatchDiscriminator(4, 2)
    with pytest.raises(ValueError, match="shape \\(N, 4\\)"):
        disc(torch.randn(3, 5))
    with pytest.raises(ValueError, match="batch_index"):
        disc.loss(torch.randn(3, 4), torch.zeros(4))
    with pytest.raises(ValueError, match="mode"):
        disc.adversarial_loss(torch.randn(3, 4), torch.zeros(3), mode="wasserstein")
    with pytest.raises(ValueError, match="reduction"):
        disc.loss(torch.randn(3, 4), torch.zeros(3), reduction="max")
