"""UniPort's Lightning-free training loop (``train(fast=True)``, the default) vs the Lightning runner."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scvi
import torch

from scvi_ext.uniport import LossEarlyStopper, UniPort, UniPortVAE, prepare_anndata
from scvi_ext.uniport._module import binary_cross_entropy

FAST = {"n_hidden": 64}
QUIET = {"enable_progress_bar": False}


@pytest.fixture(scope="module")
def bmmc_h(shared_data):
    folder = shared_data / "liger_bmmc_rna_atac"
    return prepare_anndata(
        {
            "atac": ad.read_h5ad(folder / "bmmc_atac_gene_activity.h5ad"),
            "rna": ad.read_h5ad(folder / "bmmc_rna.h5ad"),
        }
    )


def _count_loss_calls(model, monkeypatch) -> list[int]:
    calls = [0]
    original = UniPortVAE.loss

    def counted(self, *args, **kwargs):
        calls[0] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(UniPortVAE, "loss", counted)
    return calls


def test_fast_and_lightning_same_steps_history_and_comparable_loss(bmmc_h, monkeypatch):
    """Both loops call the same module loss once per step, 2 steps per epoch on 680 cells, and log the same
    history keys; after 2 epochs from the same initial weights the training losses agree within 0.5 %."""
    results = {}
    for fast in (True, False):
        a = bmmc_h.copy()
        UniPort.setup_anndata(a)
        scvi.settings.seed = 0
        model = UniPort(a)
        calls = _count_loss_calls(model, monkeypatch)
        model.train(max_epochs=2, fast=fast, **QUIET)
        monkeypatch.undo()
        results[fast] = (calls[0], model.history, model)
    (n_fast, h_fast, m_fast), (n_pl, h_pl, _) = results[True], results[False]
    assert n_fast == n_pl == 2 * (680 // 256)
    assert sorted(h_fast) == sorted(h_pl)
    for key in h_fast:
        assert h_fast[key].index.name == h_pl[key].index.name == "epoch"
        assert list(h_fast[key].columns) == [key] and len(h_fast[key]) == len(h_pl[key]) == 2
    lf, lp = (float(h["train_loss"].iloc[-1, 0]) for h in (h_fast, h_pl))
    assert abs(lf - lp) / abs(lp) < 5e-3, (lf, lp)
    of, op = (float(h["ot_loss_train"].iloc[-1, 0]) for h in (h_fast, h_pl))
    assert of > 0 and op > 0 and abs(of - op) / op < 0.5, (of, op)
    assert m_fast.is_trained_ and not m_fast.module.training
    assert len(m_fast.train_indices) == 680 and len(m_fast.validation_indices) == 0


def test_fast_save_ot_balanced_sampler_and_history_concat(bmmc_h):
    a = bmmc_h.copy()
    UniPort.setup_anndata(a)
    model = UniPort(a, **FAST)
    model.train(max_epochs=2, save_ot=True, **QUIET)
    plan = np.asarray(model.get_ot_plan())
    assert plan.shape == (340, 340) and np.isfinite(plan).all() and (plan >= 0).all()
    # the blocks of the visited cells were overwritten: mass ~1 per block, far above the uniform 1/340^2
    assert plan.max() > 100 / (340 * 340) and plan.std() > 0
    assert model.transfer_labels("source", method="ot")["predicted"].isin(["rna"]).all()
    model.train(max_epochs=1, sampler="balanced", **QUIET)  # continued training appends to the history
    assert len(model.history["train_loss"]) == 3
    assert model.history["train_loss"].index.tolist() == [0, 1, 2]


def test_loss_early_stopper_restores_best_weights():
    net = torch.nn.Linear(2, 1)
    stopper = LossEarlyStopper(net, patience=2, monitor="epoch", steps_per_epoch=1)
    with torch.no_grad():
        net.weight.fill_(1.0)
    assert not stopper.update(5.0, [5.0])  # best so far: snapshot of weight 1
    with torch.no_grad():
        net.weight.fill_(2.0)
    assert not stopper.update(6.0, [6.0])
    assert stopper.update(5.0, [5.0])  # not strictly better: 2 epochs without improvement
    assert stopper.fired and torch.all(net.weight == 1.0)


def test_ema_monitor_ignores_minibatch_noise_that_fires_the_epoch_rule():
    """One step per epoch (pancreas-like): a flat start with an OT bump (40 steps), then a slowly falling loss,
    plus +-10 noise. The epoch rule with patience 30 fires by chance; the EMA monitor follows the trend and does
    not."""
    rng = np.random.default_rng(0)
    t = np.arange(500)
    losses = (
        1618
        + 60 * np.exp(-(((t - 45) / 12.0) ** 2))
        - 0.3 * np.clip(t - 60, 0, None)
        + rng.normal(0, 10, 500)
    )
    fired = {}
    for monitor in ("epoch", "ema"):
        stopper = LossEarlyStopper(torch.nn.Linear(2, 1), 30, monitor, steps_per_epoch=1)
        fired[monitor] = next((i for i, v in enumerate(losses) if stopper.update(v, [v])), None)
    assert fired["epoch"] is not None and fired["ema"] is None, fired
    # and it still fires on a true plateau
    stopper = LossEarlyStopper(torch.nn.Linear(2, 1), 30, "ema", steps_per_epoch=1)
    flat = 1500 + rng.normal(0, 10, 2000)
    assert next((i for i, v in enumerate(flat) if stopper.update(v, [v])), None) is not None
    # "auto" picks the EMA for few steps per epoch and the reference rule otherwise
    assert LossEarlyStopper(torch.nn.Linear(2, 1), 30, "auto", 2).monitor == "ema"
    assert LossEarlyStopper(torch.nn.Linear(2, 1), 30, "auto", 40).monitor == "epoch"
    # EMA patience in steps: patience x max(steps per epoch, 10)
    assert LossEarlyStopper(torch.nn.Linear(2, 1), 30, "ema", 2).patience == 300


@pytest.mark.parametrize("fast", [True, False])
def test_early_stopping_fires_and_restores_best_on_both_paths(bmmc_h, fast, monkeypatch):
    """lr=0: the epoch loss only varies with the minibatches (and the BN running statistics keep moving), so the
    reference rule with patience 2 fires within a few epochs and must restore the state of the best epoch."""
    a = bmmc_h.copy()
    UniPort.setup_anndata(a)
    scvi.settings.seed = 0
    model = UniPort(a, **FAST)
    states = []
    original = LossEarlyStopper._snapshot

    def recording(self):
        original(self)
        states.append({k: v.clone() for k, v in self.module.state_dict().items()})

    monkeypatch.setattr(LossEarlyStopper, "_snapshot", recording)
    model.train(
        max_epochs=200,
        lr=0.0,
        early_stopping_patience=2,
        early_stopping_monitor="epoch",
        fast=fast,
        **QUIET,
    )
    assert model.early_stopped_ and model.early_stopping_monitor_ == "epoch"
    loss = model.history["train_loss"].to_numpy(float).ravel()
    assert len(loss) < 200
    best = int(np.argmin(loss))
    assert len(loss) == best + 3  # stopped after 2 epochs without a strictly lower epoch loss
    final = model.module.state_dict()
    assert all(torch.equal(final[k], v) for k, v in states[-1].items())  # weights of the best epoch


def test_same_random_stream_gives_the_same_model(bmmc_h, monkeypatch):
    """With the balanced sampler both loops draw their batches from the global torch RNG in the same way, except
    that Lightning's DataLoader draws one base seed per epoch first; replaying that draw in the fast loop makes
    the two random streams equal, and then the losses and the trained weights are the same."""
    from scvi_ext.uniport import BalancedSourceSampler

    original_iter = BalancedSourceSampler.__iter__
    flag = {"fast": True}

    def replay(self):
        if flag["fast"]:
            torch.empty((), dtype=torch.int64).random_()  # the DataLoader iterator's base-seed draw
        return original_iter(self)

    monkeypatch.setattr(BalancedSourceSampler, "__iter__", replay)
    out = {}
    for fast in (True, False):
        flag["fast"] = fast
        a = bmmc_h.copy()
        UniPort.setup_anndata(a)
        scvi.settings.seed = 0
        model = UniPort(a, **FAST)
        model.train(max_epochs=4, sampler="balanced", save_ot=True, fast=fast, **QUIET)
        out[fast] = (model.history, model.module.state_dict(), np.asarray(model.get_ot_plan()))
    (h_f, w_f, p_f), (h_l, w_l, p_l) = out[True], out[False]
    for key in ("train_loss", "ot_loss_train", "reconstruction_loss_train", "kl_local_train"):
        np.testing.assert_allclose(h_f[key].to_numpy(), h_l[key].to_numpy(), rtol=1e-5)
    for k, v in w_f.items():
        torch.testing.assert_close(v, w_l[k], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(p_f, p_l, rtol=1e-4, atol=1e-9)


def test_bad_arguments(bmmc_h):
    a = bmmc_h.copy()
    UniPort.setup_anndata(a)
    model = UniPort(a, **FAST)
    with pytest.raises(ValueError, match="fast=False"):
        model.train(max_epochs=1, callbacks=[], **QUIET)
    with pytest.raises(ValueError, match="fast=False"):
        model.train(max_epochs=1, limit_train_batches=1)
    with pytest.raises(ValueError, match="plan_kwargs"):
        model.train(max_epochs=1, plan_kwargs={"max_kl_weight": 0.5}, **QUIET)
    with pytest.raises(ValueError, match="early_stopping_monitor"):
        model.train(max_epochs=1, early_stopping_monitor="loss", **QUIET)
    with pytest.raises(ValueError, match="disagree"):
        model.train(max_epochs=1, enable_progress_bar=False, progress_bar=True)
    assert not model.is_trained_


def test_binary_cross_entropy_matches_torch_values_and_gradients():
    p = torch.rand(64, 30, dtype=torch.float64)
    p[0, :4] = torch.tensor([0.0, 1.0, 1e-300, 0.5], dtype=torch.float64)
    x = torch.rand(64, 30, dtype=torch.float64)
    a, b = p.clone().requires_grad_(), p.clone().requires_grad_()
    g = torch.randn(64, 30, dtype=torch.float64)
    ya = torch.nn.functional.binary_cross_entropy(a, x, reduction="none")
    yb = binary_cross_entropy(b, x)
    (ya * g).sum().backward()
    (yb * g).sum().backward()
    torch.testing.assert_close(yb, ya, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(b.grad, a.grad, rtol=1e-7, atol=1e-12)  # grads up to 1e12 at p = 0
