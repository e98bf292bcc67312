"""SCBIOT training length: the LR warm-up must not swallow short runs (issue 7, part B).

benchmarks/results/scbiot/latent_quality.md: with the v1.0.7 100-step warm-up, a run of fewer steps (small data
at one step per epoch) never reached the learning rate and its latent stayed far below the OT embedding.
"""

from __future__ import annotations

import numpy as np
import pytest

import scvi_ext.scbiot as scb
from scvi_ext.metrics import knn_label_accuracy
from scvi_ext.scbiot._trainingplan import SCBIOTTrainingPlan

_FAST = {"enable_progress_bar": False, "accelerator": "cpu"}


@pytest.fixture
def synthetic(make_emb):
    a = make_emb(n=200, d=8, n_batches=2, n_types=3, seed=1)
    a.obsm["X_scbiot_ot"] = a.obsm["X_pca"].copy()
    a.obs["pseudo"] = a.obs["cell_type"].astype("category")
    return a


def _lr_factors(model) -> list[float]:
    sched = model.trainer.lr_scheduler_configs[0].scheduler
    total = int(model.trainer.estimated_stepping_batches)
    return [[lam(s) for s in range(total)] for lam in sched.lr_lambdas]


def _train(a, **kw):
    scb.SCBIOT.setup_anndata(a, "X_scbiot_ot", "batch", pseudo_label_key="pseudo")
    model = scb.SCBIOT(a, n_prototypes=8, ffn_factor=4)
    model.train(**_FAST, **kw)
    return model


def test_short_run_reaches_the_learning_rate(synthetic):
    # 10 epochs of one step each (batch 1024 > 180 training cells): the LR must peak and then decay
    model = _train(synthetic.copy(), max_epochs=10, batch_size=1024)
    (f,) = _lr_factors(model)
    assert len(f) == 10
    assert max(f) == pytest.approx(1.0) and f.index(max(f)) == 0  # warm-up of ceil(0.1 * 10) = 1 step
    assert f[-1] < 0.05 and all(x >= y for x, y in zip(f, f[1:], strict=False))
    # the v1.0.7 schedule stays available: 100 warm-up steps, never more than 10 % of the LR in 10 steps
    old = _train(synthetic.copy(), max_epochs=10, batch_size=1024, plan_kwargs={"max_warmup_fraction": None})
    (g,) = _lr_factors(old)
    assert max(g) == pytest.approx(0.1)


def test_long_run_keeps_the_100_step_warmup():
    plan = SCBIOTTrainingPlan.__new__(SCBIOTTrainingPlan)
    plan.n_warmup_steps, plan.max_warmup_fraction = 100, 0.1
    assert plan.warmup_steps(15) == 2 and plan.warmup_steps(400) == 40 and plan.warmup_steps(5000) == 100
    plan.max_warmup_fraction = None
    assert plan.warmup_steps(15) == 100


def test_constant_prototype_lr(synthetic):
    model = _train(
        synthetic.copy(), max_epochs=4, batch_size=1024, plan_kwargs={"constant_prototype_lr": True}
    )
    f_net, f_proto = _lr_factors(model)
    assert f_proto == [1.0] * 4 and f_net[-1] < 1.0
    opt = model.trainer.optimizers[0]
    assert opt.param_groups[1]["params"][0] is model.module.prototypes
    assert opt.param_groups[1]["lr"] == pytest.approx(1e-2)


def test_bad_warmup_fraction(synthetic):
    with pytest.raises(ValueError, match="max_warmup_fraction"):
        _train(synthetic.copy(), max_epochs=1, batch_size=1024, plan_kwargs={"max_warmup_fraction": 1.5})


@pytest.mark.slow
def test_short_run_latent_close_to_ot(pbmc_counts):
    """Tutorial-sized reference (525 PBMCs, one step per epoch): 50 epochs give a latent near the OT embedding."""
    import scvi

    from scvi_ext.methods import prepare

    held = np.arange(pbmc_counts.n_obs) % 4 == 0
    ref = prepare(pbmc_counts[~held].copy(), "lane")
    scb.integrate(ref, "rna", obsm_key="X_pca", batch_key="lane", random_state=0)
    scb.pseudo_labels(ref, "X_scbiot_ot", resolution=0.8)
    labels = ref.obs["bulk_labels"].astype(str).to_numpy()
    acc_ot = knn_label_accuracy(ref.obsm["X_scbiot_ot"], labels)
    accs = {}
    for name, frac in (("capped", 0.1), ("v107", None)):
        scb.SCBIOT.setup_anndata(ref, "X_scbiot_ot", "lane", pseudo_label_key="leiden_scbiot_ot")
        scvi.settings.seed = 0
        model = scb.SCBIOT(ref)
        model.train(max_epochs=50, batch_size=1024, plan_kwargs={"max_warmup_fraction": frac}, **_FAST)
        accs[name] = knn_label_accuracy(model.get_latent_representation(n_components=30), labels)
    assert accs["capped"] > acc_ot - 0.05, (accs, acc_ot)
    assert accs["capped"] > accs["v107"] + 0.03, (accs, acc_ot)
