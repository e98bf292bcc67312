"""uniPort's minibatch unbalanced OT term, its global plan store and its training plan.

The minibatch plan (spec §4.1) is a proximal point method: ``n_outer`` times, solve an entropic unbalanced OT
problem whose reference measure is the previous plan, with ``n_inner`` Sinkhorn iterations each. Every solve
is :func:`scvi_ext.ot.sinkhorn_unbalanced` (log domain) with ``c`` = previous plan; the cost is divided by its
maximum so ``reg`` is relative (spec A6).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping
from scvi import REGISTRY_KEYS

from ..ot import sinkhorn_unbalanced
from ..train import OTTrainingPlan
from ._constants import DEFAULTS


def uot_minibatch(
    C: torch.Tensor,
    T0: torch.Tensor | None = None,
    *,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    prior: torch.Tensor | None = None,
    reg: float = DEFAULTS.REG,
    reg_m: float = DEFAULTS.REG_M,
    n_outer: int = DEFAULTS.N_OUTER,
    n_inner: int = DEFAULTS.N_INNER,
) -> torch.Tensor:
    r"""uniPort's proximal unbalanced OT plan for one minibatch (spec §4.1), without gradient.

    ``n_outer`` times: :math:`T \leftarrow \arg\min_T \langle \hat C/\max\hat C, T\rangle
    + \varepsilon\,\mathrm{KL}(T|T_{\mathrm{prev}}) + \rho\,\mathrm{KL}(T1|a) + \rho\,\mathrm{KL}(T^\top 1|b)`
    approximated by ``n_inner`` log-domain Sinkhorn iterations of :func:`scvi_ext.ot.sinkhorn_unbalanced`
    (potentials carried from one outer step to the next, like the reference carries ``u``).

    Several independent problems can be solved at once along a leading dimension (``C`` of shape
    ``(Q, n, m)``); rows with zero mass in ``a`` (padding) get no mass. The max-normalisation of the cost is
    per problem.

    Parameters
    ----------
    C
        Cost matrix ``(n, m)`` or ``(Q, n, m)`` (detached inside).
    T0
        Initial plan / first reference measure (a block of the global plan); ``None`` = ``1/(n m)``.
    a, b
        Row / column masses ``(..., n)`` / ``(..., m)``; ``None`` = uniform ``1/n`` / ``1/m``.
    prior
        Optional multiplier of the cost inside the solver only (spec §4, ``get_prior``).
    reg
        Relative entropic regularisation :math:`\varepsilon` (of the max-normalised cost).
    reg_m
        Marginal relaxation :math:`\rho`.
    n_outer, n_inner
        Proximal steps and Sinkhorn iterations per step (reference: 10 and 10, no convergence test).

    Returns
    -------
    torch.Tensor
        Plan, shape of ``C``, detached; a problem whose solve produced NaNs gets the uniform
        ``1/(n m)`` plan (as the reference).

    Examples
    --------
    >>> import torch
    >>> T = uot_minibatch(torch.rand(4, 3))
    >>> T.shape
    torch.Size([4, 3])
    """
    with torch.no_grad():
        C = C.detach()
        n, m = C.shape[-2], C.shape[-1]
        C_hat = C * prior if prior is not None else C
        cmax = C_hat.abs().amax(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(C.dtype).tiny)
        C_hat = C_hat / cmax
        if a is not None:
            n_eff = (a > 0).sum(-1).to(C.dtype)[..., None, None]
        else:
            n_eff = torch.full((), float(n), dtype=C.dtype, device=C.device)
        uniform = (1.0 / (n_eff * m)).expand_as(C)
        T = uniform.clone() if T0 is None else T0.to(C)
        warm = None
        for _ in range(int(n_outer)):
            res = sinkhorn_unbalanced(
                a,
                b,
                C_hat,
                reg=reg,
                reg_m=reg_m,
                c=T,
                n_iter=int(n_inner),
                tol=0.0,
                check_every=int(n_inner),
                warmstart=warm,
                validate=False,
            )
            T = res.plan
            warm = (torch.zeros_like(res.f), res.g)  # the first update recomputes f from g
        bad = ~torch.isfinite(T).flatten(-2).all(-1)
        if bool(bad.any()):
            T = torch.where(bad[..., None, None], uniform, T)
            if a is not None:
                T = T * (a > 0)[..., :, None]
    return T


class GlobalPlanStore:
    """Global (cells x cells) OT plans, one per query source, kept on the CPU (spec §6).

    A plan is initialised to ``1/(n_q n_r)``; each minibatch reads its block as warm start and overwrites it.
    Plans up to ``max_dense_bytes`` live in RAM; larger ones in a disk-backed :class:`numpy.memmap` in a
    temporary directory, so e.g. 2,500 spots x 100,000 cells (1 GB) never sits in memory. Read-outs
    (:func:`~scvi_ext.uniport.plan_label_scores`) go through the plan in row blocks.

    Parameters
    ----------
    sizes
        ``{query code: (n_query, n_reference)}``.
    max_dense_bytes
        Largest plan held in RAM.
    directory
        Where memory-mapped plans go (default: a new temporary directory).

    Examples
    --------
    >>> store = GlobalPlanStore({0: (3, 4)})
    >>> store.gather(0, np.array([0, 2]), np.array([1])).shape
    torch.Size([2, 1])
    """

    def __init__(
        self,
        sizes: Mapping[int, tuple[int, int]],
        max_dense_bytes: int = DEFAULTS.MAX_DENSE_PLAN_BYTES,
        directory: str | None = None,
    ):
        self.plans: dict[int, np.ndarray] = {}
        self._dir = directory
        for q, (n_q, n_r) in sizes.items():
            init = np.float32(1.0 / (n_q * n_r))
            if n_q * n_r * 4 <= max_dense_bytes:
                self.plans[q] = np.full((n_q, n_r), init, dtype=np.float32)
            else:
                if self._dir is None:
                    self._dir = tempfile.mkdtemp(prefix="uniport_plan_")
                path = os.path.join(self._dir, f"plan_{q}.f32")
                mm = np.memmap(path, dtype=np.float32, mode="w+", shape=(n_q, n_r))
                for start in range(0, n_q, 4096):
                    mm[start : start + 4096] = init
                self.plans[q] = mm

    def gather(self, q: int, rows: np.ndarray, cols: np.ndarray) -> torch.Tensor:
        """Block ``plan[q][rows][:, cols]`` as a float32 tensor.

        Examples
        --------
        >>> GlobalPlanStore({0: (2, 2)}).gather(0, np.array([1]), np.array([0, 1])).sum().item()
        0.5
        """
        return torch.from_numpy(np.ascontiguousarray(self.plans[q][np.ix_(rows, cols)]))

    def scatter(self, q: int, rows: np.ndarray, cols: np.ndarray, block: torch.Tensor) -> None:
        """Overwrite ``plan[q][rows][:, cols]`` with ``block``.

        Examples
        --------
        >>> s = GlobalPlanStore({0: (2, 2)})
        >>> s.scatter(0, np.array([0]), np.array([1]), torch.ones(1, 1))
        >>> float(s.plans[0][0, 1])
        1.0
        """
        self.plans[q][np.ix_(rows, cols)] = block.detach().to("cpu", torch.float32).numpy()


class _RestoreBestEarlyStopping(EarlyStopping):
    """Lightning early stopping on the epoch training loss that restores the best weights when it fires.

    If training ends by reaching ``max_epochs`` the last weights are kept (reference parity, spec §5).
    """

    def __init__(self, patience: int):
        super().__init__(
            monitor="train_loss",
            mode="min",
            patience=patience,
            min_delta=0.0,
            check_on_train_epoch_end=True,
            strict=False,
            verbose=False,
        )
        self._best_state: dict[str, torch.Tensor] | None = None
        self.fired = False

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        metrics = trainer.callback_metrics
        current = metrics.get(self.monitor)
        if current is not None and (self._best_state is None or float(current) < float(self.best_score)):
            self._best_state = {k: v.detach().clone() for k, v in pl_module.module.state_dict().items()}
        super().on_train_epoch_end(trainer, pl_module)
        if trainer.should_stop and self.wait_count >= self.patience and self._best_state is not None:
            pl_module.module.load_state_dict(self._best_state)
            self.fired = True


class UniPortTrainingPlan(OTTrainingPlan):
    """:class:`scvi_ext.train.OTTrainingPlan` that warm-starts each minibatch OT solve from a global plan.

    Without a store (``save_ot=False``) every solve starts from ``1/(n m)``; with one, the block of the
    global plan addressed by the minibatch's rows is passed to ``module.loss`` as ``ot_init`` and the new
    plans (``module._last_ot``) are written back after the step (spec §6).

    Parameters
    ----------
    module
        A :class:`~scvi_ext.uniport.UniPortVAE`.
    plan_store
        Optional :class:`GlobalPlanStore`.
    within_index
        Row -> index within its source (length = registered cells); needed with a store.
    **kwargs
        Passed to :class:`~scvi_ext.train.OTTrainingPlan` (``lr``, ``weight_decay``, ``eps``, ``term_weights``).

    Examples
    --------
    >>> plan = UniPortTrainingPlan(module, term_weights={"ot": 1.0})  # doctest: +SKIP
    """

    def __init__(
        self,
        module,
        *,
        plan_store: GlobalPlanStore | None = None,
        within_index: np.ndarray | None = None,
        **kwargs: Any,
    ):
        super().__init__(module, **kwargs)
        self.plan_store = plan_store
        self.within_index = within_index

    def _blocks(self, batch) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        idx = batch[REGISTRY_KEYS.INDICES_KEY].long().ravel().cpu().numpy()
        src = batch[REGISTRY_KEYS.BATCH_KEY].long().ravel().cpu().numpy()
        within = self.within_index[idx]
        ref = self.module.reference_idx
        cols = within[src == ref]
        return {q: (within[src == q], cols) for q in self.plan_store.plans if (src == q).any()}

    def training_step(self, batch, batch_idx):
        """Gather plan blocks, run the OT-weighted step, scatter the new plans back."""
        blocks = None
        if self.plan_store is not None:
            blocks = self._blocks(batch)
            device = batch[REGISTRY_KEYS.X_KEY].device
            self.loss_kwargs["ot_init"] = {
                q: self.plan_store.gather(q, r, c).to(device) for q, (r, c) in blocks.items() if len(c)
            }
        try:
            loss = super().training_step(batch, batch_idx)
        finally:
            self.loss_kwargs.pop("ot_init", None)
        if blocks is not None:
            for q, T in self.module._last_ot.items():
                r, c = blocks[q]
                self.plan_store.scatter(q, r, c, T)
        return loss


def cumulative_within_index(codes: Sequence[int] | np.ndarray) -> np.ndarray:
    """Index of every row within its own source (works for unsorted rows, spec A14).

    Examples
    --------
    >>> cumulative_within_index([1, 0, 1, 1, 0]).tolist()
    [0, 0, 1, 2, 1]
    """
    codes = np.asarray(codes).ravel()
    out = np.empty(len(codes), dtype=np.int64)
    for s in np.unique(codes):
        m = codes == s
        out[m] = np.arange(int(m.sum()))
    return out
