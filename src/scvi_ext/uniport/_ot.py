"""uniPort's minibatch unbalanced OT term, its global plan store and its training plan.

The minibatch plan (spec §4.1) is a proximal point method: ``n_outer`` times, solve an entropic unbalanced OT
problem whose reference measure is the previous plan, with ``n_inner`` Sinkhorn iterations each. Every solve
is :func:`scvi_ext.ot.sinkhorn_unbalanced` with ``c`` = previous plan; the cost is divided by its maximum so
``reg`` is relative (spec A6). The solver runs in the scaling domain (two mat-vecs per iteration, like the
reference) when ``method="auto"`` finds that the kernel cannot under/overflow, which holds for uniPort's
defaults (``exp(-C/max C / 0.1) >= e^-10`` times the previous plan), and in the log domain otherwise.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from lightning.pytorch.callbacks import Callback
from scvi import REGISTRY_KEYS

from ..ot import sinkhorn_unbalanced
from ..train import OTTrainingPlan
from ._constants import DEFAULTS, ES_MONITORS, KEYS

_EXTRA_METRICS = (KEYS.OT_LOSS, KEYS.REC_COMMON, KEYS.REC_SPECIFIC)
_SAVE_BLOCK = 4096
_PLAN_META = "plans.json"


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
    method: str = "auto",
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
    method
        Solver domain, see :func:`scvi_ext.ot.sinkhorn_unbalanced`: ``"auto"`` (default; scaling domain
        when it cannot under/overflow), ``"log"`` or ``"scaling"``. ``"auto"`` first runs all proximal steps
        in one scaling-domain loop with a single host sync (:func:`_proximal_scaling`) and falls back to the
        per-solve checked path if a range/finiteness check fails.

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
        if method == "auto":
            fast = _proximal_scaling(C_hat, T, a, b, reg, reg_m, int(n_outer), int(n_inner))
            if fast is not None:
                return fast
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
                method=method,
                compute_objective=False,
            )
            T = res.plan
            warm = (torch.zeros_like(res.f), res.g)  # the first update recomputes f from g
        bad = ~torch.isfinite(T).flatten(-2).all(-1)
        if bool(bad.any()):
            T = torch.where(bad[..., None, None], uniform, T)
            if a is not None:
                T = T * (a > 0)[..., :, None]
    return T


def _proximal_scaling(
    C_hat: torch.Tensor,
    T: torch.Tensor,
    a: torch.Tensor | None,
    b: torch.Tensor | None,
    reg: float,
    reg_m: float,
    n_outer: int,
    n_inner: int,
) -> torch.Tensor | None:
    """The ``n_outer`` proximal solves of :func:`uot_minibatch` in the scaling domain with one host sync.

    Same iterates as ``n_outer`` calls of ``sinkhorn_unbalanced(method="scaling", c=T_prev)`` with ``v``
    carried from one solve to the next, but the kernel ``exp(-C_hat/reg)`` is built once and the safety
    checks (finite plan, ``|log u|``, ``|log v|`` of live rows/columns within the float range that
    ``method="auto"`` allows) are accumulated on the device and read once at the end. Returns ``None`` when
    the fast path does not apply or a check fails; the caller then runs the general (checked) solver.
    """
    if not isinstance(reg_m, int | float) or not reg > 0 or n_outer < 1 or n_inner < 1:
        return None
    fi = torch.finfo(C_hat.dtype)
    lo, pot = 0.5 * math.log(fi.tiny), 0.25 * math.log(fi.max)
    if 1.0 / reg > -lo / 2:  # exp(-C_hat/reg) could underflow: leave it to the log domain
        return None
    tau = 1.0 if math.isinf(reg_m) else float(reg_m) / (float(reg_m) + reg)
    n, m = C_hat.shape[-2], C_hat.shape[-1]
    batch = C_hat.shape[:-2]
    if a is None and b is None and C_hat.ndim == 2:
        return _proximal_scaling_uniform(C_hat, T, reg, tau, n_outer, n_inner, pot)
    mask_a, mask_b = a is not None, b is not None  # zero masses (padding rows) need masking
    if a is None:
        a = C_hat.new_full((n,), 1.0 / n)
    if b is None:
        b = C_hat.new_full((m,), 1.0 / m)
    live_a, live_b = a > 0, b > 0
    zero = C_hat.new_zeros(())
    K0 = torch.exp(-C_hat / reg)
    if C_hat.ndim == 2:
        Kv, Ktu = torch.mv, torch.mv
    else:  # row-vector products (a batched ``K @ v[..., None]`` is several times slower on CPU)

        def Kv(Kt, x):
            return torch.matmul(x.unsqueeze(-2), Kt).squeeze(-2)

        Ktu = Kv
    v = C_hat.new_ones((*batch, m))
    worst = zero
    for _ in range(n_outer):
        K = K0 * T
        Kt = K.transpose(-1, -2)
        A, At = (K, Kt) if C_hat.ndim == 2 else (Kt, K)  # what Kv / Ktu multiply with
        for _ in range(n_inner):
            u = a / Kv(A, v)
            if mask_a:
                u = torch.where(live_a, u, zero)
            if tau != 1.0:
                u = u.pow_(tau)
            v = b / Ktu(At, u)
            if mask_b:
                v = torch.where(live_b, v, zero)
            if tau != 1.0:
                v = v.pow_(tau)
        T = u[..., :, None] * K * v[..., None, :]
        size = torch.maximum(
            torch.where(live_a, torch.log(u), zero).abs().amax(),
            torch.where(live_b, torch.log(v), zero).abs().amax(),
        )
        worst = torch.maximum(worst, size)  # NaN propagates
    ok = torch.isfinite(T).all() & (worst <= pot)
    if not bool(ok):  # the one host sync
        return None
    return T


def _proximal_scaling_uniform(
    C_hat: torch.Tensor, T: torch.Tensor, reg: float, tau: float, n_outer: int, n_inner: int, pot: float
) -> torch.Tensor | None:
    """:func:`_proximal_scaling` for one problem with uniform masses: the constant masses are carried as
    scalars, ``u = alpha * (K v~)^-tau``, ``v = beta * (K^T u~)^-tau`` (two tensor ops per half-iteration
    fewer; the same iterates up to rounding)."""
    n, m = C_hat.shape
    ca, cb = (1.0 / n) ** tau, (1.0 / m) ** tau
    K0 = torch.exp(-C_hat / reg)
    v = C_hat.new_ones(m)
    alpha = beta = 1.0  # u = alpha * u~, v = beta * v~
    worst = C_hat.new_zeros(())
    for _ in range(n_outer):
        K = K0 * T
        Kt = K.t()
        for _ in range(n_inner):
            u = torch.mv(K, v).pow_(-tau)
            alpha = ca * beta**-tau
            v = torch.mv(Kt, u).pow_(-tau)
            beta = cb * alpha**-tau
        T = (alpha * beta) * (u[:, None] * K * v[None, :])
        size = torch.maximum(
            (torch.log(u) + math.log(alpha)).abs().amax(), (torch.log(v) + math.log(beta)).abs().amax()
        )
        worst = torch.maximum(worst, size)  # NaN propagates
    ok = torch.isfinite(T).all() & (worst <= pot)
    if not bool(ok):  # the one host sync
        return None
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
                os.makedirs(self._dir, exist_ok=True)
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

    def save(self, directory: str, sparse: bool = False, threshold: float = 0.0) -> None:
        """Write the plans to ``directory``, block by block (never the whole plan in memory at once).

        Dense: one ``.npy`` per query (written through :func:`numpy.lib.format.open_memmap`). Sparse: one
        scipy CSR ``.npz`` per query keeping the entries ``>= threshold * max(plan)`` (``threshold=0``: all
        non-zero entries). A ``plans.json`` lists format and shapes.

        Parameters
        ----------
        directory
            Output folder (created).
        sparse
            Store CSR matrices instead of dense arrays.
        threshold
            Sparse only: relative cut below which entries are dropped (e.g. ``1e-3``).

        Examples
        --------
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> GlobalPlanStore({0: (3, 4)}).save(d, sparse=True)
        >>> GlobalPlanStore.load(d).plans[0].shape
        (3, 4)
        """
        if threshold < 0 or not np.isfinite(threshold):
            raise ValueError(f"threshold must be a finite number >= 0, got {threshold!r}.")
        os.makedirs(directory, exist_ok=True)
        meta: dict[str, Any] = {"format": "sparse" if sparse else "dense", "plans": {}}
        for q, plan in self.plans.items():
            n_q, n_r = plan.shape
            meta["plans"][str(int(q))] = [int(n_q), int(n_r)]
            if sparse:
                cut = 0.0
                if threshold > 0:
                    gmax = max(float(np.max(plan[i : i + _SAVE_BLOCK])) for i in range(0, n_q, _SAVE_BLOCK))
                    cut = threshold * gmax
                blocks = []
                for i in range(0, n_q, _SAVE_BLOCK):
                    blk = np.asarray(plan[i : i + _SAVE_BLOCK], dtype=np.float32)
                    blocks.append(sp.csr_matrix(np.where(blk >= cut, blk, 0.0) if cut > 0 else blk))
                sp.save_npz(os.path.join(directory, f"plan_{int(q)}.npz"), sp.vstack(blocks, format="csr"))
            else:
                out = np.lib.format.open_memmap(
                    os.path.join(directory, f"plan_{int(q)}.npy"),
                    mode="w+",
                    dtype=np.float32,
                    shape=(n_q, n_r),
                )
                for i in range(0, n_q, _SAVE_BLOCK):
                    out[i : i + _SAVE_BLOCK] = plan[i : i + _SAVE_BLOCK]
                out.flush()
                del out
        with open(os.path.join(directory, _PLAN_META), "w") as fh:
            json.dump(meta, fh)

    @classmethod
    def load(cls, directory: str, mmap: bool = True) -> GlobalPlanStore:
        """Read plans written by :meth:`save` (dense ones memory-mapped copy-on-write when ``mmap``).

        Parameters
        ----------
        directory
            Folder written by :meth:`save`.
        mmap
            Memory-map dense plans instead of reading them into RAM.

        Returns
        -------
        GlobalPlanStore
            Read-only use (read-outs); training starts a new store.

        Examples
        --------
        >>> store = GlobalPlanStore.load("model_dir/ot_plan")  # doctest: +SKIP
        """
        path = os.path.join(directory, _PLAN_META)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{directory!r} has no {_PLAN_META}: not a folder written by GlobalPlanStore.save."
            )
        with open(path) as fh:
            meta = json.load(fh)
        store = cls.__new__(cls)
        store._dir = directory
        store.plans = {}
        for q, shape in meta["plans"].items():
            if meta["format"] == "sparse":
                plan = sp.load_npz(os.path.join(directory, f"plan_{q}.npz")).tocsr()
            else:
                plan = np.load(os.path.join(directory, f"plan_{q}.npy"), mmap_mode="c" if mmap else None)
            if tuple(plan.shape) != tuple(shape):
                raise ValueError(
                    f"plan {q} in {directory!r} has shape {plan.shape}, expected {tuple(shape)}."
                )
            store.plans[int(q)] = plan
        return store

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


def resolve_monitor(monitor: str, steps_per_epoch: int) -> str:
    """``"auto"`` -> ``"ema"`` if an epoch has fewer than ``DEFAULTS.ES_MIN_STEPS_PER_EPOCH`` steps, else ``"epoch"``.

    Examples
    --------
    >>> resolve_monitor("auto", 1), resolve_monitor("auto", 40), resolve_monitor("epoch", 1)
    ('ema', 'epoch', 'epoch')
    """
    if monitor not in ES_MONITORS:
        raise ValueError(f"early_stopping_monitor must be one of {list(ES_MONITORS)}, got {monitor!r}.")
    if monitor != ES_MONITORS.AUTO:
        return monitor
    return ES_MONITORS.EMA if int(steps_per_epoch) < DEFAULTS.ES_MIN_STEPS_PER_EPOCH else ES_MONITORS.EPOCH


class LossEarlyStopper:
    """Early stopping on the training loss that restores the best weights when it fires (both training loops).

    ``monitor="epoch"`` is the reference's rule (uniport 1.3 ``EarlyStopping``, spec §5): an epoch improves when
    its mean training loss is strictly below the best so far; after ``patience`` epochs without improvement
    training stops and the best weights are restored.

    ``monitor="ema"`` is a deliberate difference for epochs of few steps (e.g. one 256-cell step per epoch on
    350 cells), where the epoch loss is a single noisy minibatch and, early in training, the rising OT term
    (the latent expands from its collapsed start) cancels the falling reconstruction for tens of steps, so the
    epoch rule fires by chance after a few dozen steps. The monitored value is an exponential moving average
    of the per-step losses with span ``patience * steps_per_epoch`` steps (``alpha = 2 / (span + 1)``), checked
    at the end of every epoch, and patience counts steps: ``patience * max(steps_per_epoch, 10)`` (at least the
    300 steps that the epoch rule waits when an epoch has 10 steps). ``"auto"`` picks ``"ema"`` when an epoch
    has fewer than ``DEFAULTS.ES_MIN_STEPS_PER_EPOCH`` (10) steps, else ``"epoch"``. If training ends by
    reaching the last epoch, the last weights are kept (reference parity).

    Parameters
    ----------
    module
        The module whose ``state_dict`` is saved and restored.
    patience
        Patience in epochs (30).
    monitor
        ``"auto"``, ``"epoch"`` or ``"ema"``.
    steps_per_epoch
        Optimisation steps per epoch.

    Examples
    --------
    >>> stopper = LossEarlyStopper(torch.nn.Linear(2, 1), patience=2, monitor="epoch", steps_per_epoch=1)
    >>> [stopper.update(v, [v]) for v in (3.0, 2.0, 2.5, 2.1)]
    [False, False, False, True]
    """

    def __init__(self, module: torch.nn.Module, patience: int, monitor: str, steps_per_epoch: int):
        if int(patience) < 1:
            raise ValueError(f"early_stopping_patience must be >= 1, got {patience!r}.")
        steps_per_epoch = max(1, int(steps_per_epoch))
        monitor = resolve_monitor(monitor, steps_per_epoch)
        self.module = module
        self.monitor = monitor
        if monitor == ES_MONITORS.EMA:
            self.patience = int(patience) * max(steps_per_epoch, DEFAULTS.ES_MIN_STEPS_PER_EPOCH)
            self.alpha = 2.0 / (int(patience) * steps_per_epoch + 1.0)
        else:
            self.patience = int(patience)
            self.alpha = 1.0
        self.best_score = float("inf")
        self.wait_count = 0
        self.ema: float | None = None
        self._best_state: dict[str, torch.Tensor] | None = None
        self.fired = False

    def _snapshot(self) -> None:
        state = self.module.state_dict()
        if self._best_state is None:
            self._best_state = {k: v.detach().clone() for k, v in state.items()}
        else:  # reuse the buffers: no allocation per improvement
            for k, v in state.items():
                self._best_state[k].copy_(v.detach())

    def update(self, epoch_mean: float, step_losses: Sequence[float]) -> bool:
        """Feed one epoch (its mean loss and its per-step losses); ``True`` = stop (best weights restored).

        Examples
        --------
        >>> s = LossEarlyStopper(torch.nn.Linear(2, 1), 1, "ema", 2)
        >>> s.update(2.0, [2.0, 2.0]), s.ema
        (False, 2.0)
        """
        if self.monitor == ES_MONITORS.EPOCH:
            current, units = float(epoch_mean), 1
        else:
            for value in step_losses:
                value = float(value)
                self.ema = value if self.ema is None else self.ema + self.alpha * (value - self.ema)
            current, units = (self.ema if self.ema is not None else float("inf")), max(1, len(step_losses))
        if current < self.best_score:
            self.best_score = current
            self.wait_count = 0
            self._snapshot()
            return False
        self.wait_count += units
        if self.wait_count >= self.patience:
            if self._best_state is not None:
                self.module.load_state_dict(self._best_state)
            self.fired = True
            return True
        return False


class _RestoreBestEarlyStopping(Callback):
    """Lightning callback running :class:`LossEarlyStopper` at the end of every training epoch.

    The losses are read from the training plan (:meth:`UniPortTrainingPlan.epoch_means` and
    :meth:`UniPortTrainingPlan.epoch_step_losses`), so nothing has to go through Lightning's (per-call
    expensive) logging.
    """

    def __init__(self, patience: int, monitor: str = ES_MONITORS.EPOCH):
        super().__init__()
        if monitor not in ES_MONITORS:
            raise ValueError(f"early_stopping_monitor must be one of {list(ES_MONITORS)}, got {monitor!r}.")
        self.patience = int(patience)
        self.monitor = monitor
        self.stopper: LossEarlyStopper | None = None

    @property
    def fired(self) -> bool:
        """Whether early stopping fired (best weights restored)."""
        return bool(self.stopper is not None and self.stopper.fired)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        means = pl_module.epoch_means() if hasattr(pl_module, "epoch_means") else None
        if not means:
            return
        if self.stopper is None:
            self.stopper = LossEarlyStopper(
                pl_module.module, self.patience, self.monitor, int(trainer.num_training_batches)
            )
        steps = pl_module.epoch_step_losses() if self.stopper.monitor == ES_MONITORS.EMA else []
        if self.stopper.update(means["train_loss"], steps):
            trainer.should_stop = True


def step_stats(out) -> torch.Tensor:
    """This step's logged losses times its cells (a device tensor; no host sync).

    Order: loss, reconstruction per cell, KL per cell, KL global, then ``ot_loss``, ``rec_common``,
    ``rec_specific``; summed over an epoch and divided by its cells by :func:`epoch_means_from_sums`.
    """
    n = int(out.n_obs_minibatch)
    vals = [
        out.loss.detach(),
        out.reconstruction_loss_sum.detach() / n,
        out.kl_local_sum.detach() / n,
        torch.as_tensor(out.kl_global_sum, dtype=out.loss.dtype, device=out.loss.device).detach(),
        *(out.extra_metrics[k].detach() for k in _EXTRA_METRICS),
    ]
    return torch.stack([v.reshape(()).to(out.loss.dtype) for v in vals]) * n


def epoch_means_from_sums(
    sums: Sequence[float], n: int, term_weights: Mapping[str, float]
) -> dict[str, float]:
    """Epoch means named as scvi-tools logs them (``train_loss``, ``elbo_train``, ...; see ``epoch_means``)."""
    loss, rec, kl_l, kl_g, *extra = [float(v) / n for v in sums]
    return {
        "train_loss": loss,
        "elbo_train": rec + kl_l + kl_g,
        "reconstruction_loss_train": rec,
        "kl_local_train": kl_l,
        "kl_global_train": kl_g,
        **{f"{k}_train": v for k, v in zip(_EXTRA_METRICS, extra, strict=True)},
        **{f"{k}_weight": float(v) for k, v in term_weights.items()},
    }


def plan_blocks(
    store: GlobalPlanStore, within_index: np.ndarray, reference_idx: int, batch: Mapping[str, torch.Tensor]
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """``{query: (rows within the query, columns within the reference)}`` of a minibatch's plan blocks."""
    idx = batch[REGISTRY_KEYS.INDICES_KEY].long().ravel().cpu().numpy()
    src = batch[REGISTRY_KEYS.BATCH_KEY].long().ravel().cpu().numpy()
    within = within_index[idx]
    cols = within[src == reference_idx]
    return {q: (within[src == q], cols) for q in store.plans if (src == q).any()}


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
        return plan_blocks(self.plan_store, self.within_index, self.module.reference_idx, batch)

    def on_train_start(self) -> None:
        """Start a fresh per-epoch history."""
        super().on_train_start()
        self._history: list[dict[str, float]] = []

    def on_train_epoch_start(self) -> None:
        """Reset the epoch sums of the logged losses."""
        super().on_train_epoch_start()
        self._epoch_sums: torch.Tensor | None = None
        self._epoch_n = 0
        self._epoch_cache: dict[str, float] | None = None
        self._epoch_steps: list[torch.Tensor] = []

    def _accumulate(self, out) -> None:
        """Add this step's losses (weighted by its cells) to the epoch sums; no host sync."""
        step = step_stats(out)
        self._epoch_sums = step if self._epoch_sums is None else self._epoch_sums + step
        self._epoch_n += int(out.n_obs_minibatch)
        self._epoch_steps.append(out.loss.detach().reshape(()))

    def epoch_step_losses(self) -> list[float]:
        """This epoch's per-step training losses (one host sync; for the ``"ema"`` early-stopping monitor).

        Examples
        --------
        >>> plan.epoch_step_losses()  # doctest: +SKIP
        """
        steps = getattr(self, "_epoch_steps", [])
        return torch.stack(steps).tolist() if steps else []

    def epoch_means(self) -> dict[str, float] | None:
        """Means of this epoch's losses (one host sync, cached), named as scvi-tools logs them.

        ``train_loss``, ``elbo_train``, ``reconstruction_loss_train``, ``kl_local_train``, ``kl_global_train``,
        ``ot_loss_train``, ``rec_common_train``, ``rec_specific_train`` and the ``ot_weight`` schedule;
        ``None`` before the first step of the epoch.

        Examples
        --------
        >>> plan.epoch_means()["train_loss"]  # doctest: +SKIP
        """
        if getattr(self, "_epoch_cache", None) is not None:
            return self._epoch_cache
        sums = getattr(self, "_epoch_sums", None)
        if sums is None or self._epoch_n == 0:
            return None
        self._epoch_cache = epoch_means_from_sums(sums.tolist(), self._epoch_n, self.current_term_weights())
        return self._epoch_cache

    def on_train_epoch_end(self) -> None:
        """Record the epoch means (written to the logger once, at the end of training).

        One Lightning ``log`` call costs milliseconds; with uniPort's short epochs (e.g. 2 steps on 680 cells)
        per-step or per-epoch logging was a large share of the run time.
        """
        means = self.epoch_means()
        if means is not None:
            if not hasattr(self, "_history"):
                self._history = []
            self._history.append({"epoch": self.current_epoch, **means})
        super().on_train_epoch_end()

    def on_train_end(self) -> None:
        """Write the per-epoch history to the logger (scvi-tools' ``model.history``) in one go."""
        super().on_train_end()
        rows = getattr(self, "_history", [])
        logger = self.logger
        if not rows or logger is None:
            return
        data = getattr(getattr(logger, "experiment", None), "data", None)
        if isinstance(data, dict):  # scvi's SimpleLogger: {key: DataFrame indexed by epoch}
            frame = pd.DataFrame(rows).set_index("epoch")
            for key in frame.columns:
                data[key] = frame[[key]].astype(float)
        else:
            for row in rows:
                logger.log_metrics(dict(row), step=int(row["epoch"]))

    def training_step(self, batch, batch_idx):
        """Gather plan blocks, run the OT-weighted step, scatter the new plans back.

        Logging is lean (see :meth:`on_train_epoch_end`): the per-step losses are summed on the device and
        logged as epoch means, which removes Lightning's per-step logging cost (spec §5 logs per epoch too).
        """
        blocks = None
        if self.plan_store is not None:
            blocks = self._blocks(batch)
            device = batch[REGISTRY_KEYS.X_KEY].device
            self.loss_kwargs["ot_init"] = {
                q: self.plan_store.gather(q, r, c).to(device) for q, (r, c) in blocks.items() if len(c)
            }
        try:
            self._update_term_weights(batch, log=False)
            if "kl_weight" in self.loss_kwargs:
                self.loss_kwargs["kl_weight"] = self.kl_weight
            _, _, out = self.forward(batch, loss_kwargs=self.loss_kwargs)
        finally:
            self.loss_kwargs.pop("ot_init", None)
        if not hasattr(self, "_epoch_n"):
            self._epoch_sums, self._epoch_n, self._epoch_cache, self._epoch_steps = None, 0, None, []
        self._accumulate(out)
        if blocks is not None:
            for q, T in self.module._last_ot.items():
                r, c = blocks[q]
                self.plan_store.scatter(q, r, c, T)
        return out.loss


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
