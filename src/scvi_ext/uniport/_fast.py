"""uniPort's Lightning-free training loop (``UniPort.train(fast=True)``, the default).

Same model as the Lightning runner (:class:`~scvi_ext.uniport.UniPortTrainingPlan`): the step calls the same
``module.forward`` -> ``module.loss`` with the same loss kwargs (``kl_weight`` 1, scheduled ``ot_weight``,
``ot_init`` blocks of the global plan), Adam with the same settings, the same samplers (a fresh uniform
permutation of all rows per epoch with ``drop_last``, or :class:`~scvi_ext.uniport.BalancedSourceSampler`),
the same early stopping (:class:`~scvi_ext.uniport.LossEarlyStopper`) and the same per-epoch history. What it
drops is the loop machinery: Lightning hooks, the optimiser closure, the ``DataLoader``/collate path and
epoch start/end bookkeeping (with 2 steps per epoch on small data, a large share of the run time). The
registered fields stay resident as tensors on the training device, minibatches are gathered with
``index_select``, and the losses are summed on the device and read back once per epoch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from ..train import build_term_schedules
from ._constants import DEFAULTS
from ._ot import GlobalPlanStore, LossEarlyStopper, epoch_means_from_sums, plan_blocks, step_stats
from ._sampler import BalancedSourceSampler

logger = logging.getLogger(__name__)

#: ``plan_kwargs`` the fast loop understands (others need the Lightning runner, ``fast=False``).
FAST_PLAN_KWARGS = frozenset({"term_weights", "term_warmup", "term_warmup_unit"})
#: Trainer kwargs the fast loop understands.
FAST_TRAINER_KWARGS = frozenset({"enable_progress_bar", "progress_bar"})


class ResidentFields:
    """The registered fields of an AnnData as tensors on one device, gathered row-wise.

    Float fields become float32, integer fields int64, with the shapes scvi-tools' data loader gives
    (``[n, 1]`` for obs columns). A sparse X larger than ``max_dense_bytes`` stays a CSR matrix on the host
    and its rows are densified per step.

    Parameters
    ----------
    fields
        ``{registry key: array}`` (e.g. from ``AnnDataManager.get_from_registry``).
    device
        Training device.
    max_dense_bytes
        Largest sparse X densified up front.

    Examples
    --------
    >>> r = ResidentFields({"X": np.ones((4, 3)), "batch": np.zeros((4, 1), dtype=np.int8)}, torch.device("cpu"))
    >>> b = r.rows(torch.tensor([0, 2]))
    >>> b["X"].shape, b["batch"].dtype
    (torch.Size([2, 3]), torch.int64)
    """

    def __init__(
        self,
        fields: Mapping[str, Any],
        device: torch.device,
        max_dense_bytes: int = DEFAULTS.MAX_DENSE_X_BYTES,
    ):
        self.device = device
        self.tensors: dict[str, torch.Tensor] = {}
        self.host_csr: dict[str, sp.csr_matrix] = {}
        self.n_obs: int | None = None
        for key, value in fields.items():
            if isinstance(value, pd.DataFrame | pd.Series):
                value = value.to_numpy()
            if sp.issparse(value):
                if np.prod(value.shape) * 4 > max_dense_bytes:
                    self.host_csr[key] = sp.csr_matrix(value, dtype=np.float32)
                    self.n_obs = int(value.shape[0])
                    continue
                value = value.toarray()
            arr = np.asarray(value)
            if arr.dtype.kind in "iub":
                t = torch.from_numpy(np.ascontiguousarray(arr.astype(np.int64, copy=False)))
            else:
                t = torch.from_numpy(np.ascontiguousarray(arr.astype(np.float32, copy=False)))
            self.tensors[key] = t.to(device)
            self.n_obs = int(arr.shape[0])

    def rows(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """Minibatch dict of rows ``idx`` (a device int64 tensor)."""
        batch = {k: t.index_select(0, idx) for k, t in self.tensors.items()}
        if self.host_csr:
            rows = idx.cpu().numpy()
            for k, m in self.host_csr.items():
                batch[k] = torch.from_numpy(m[rows].toarray()).to(self.device)
        return batch


def check_fast_kwargs(plan_kwargs: Mapping[str, Any] | None, trainer_kwargs: Mapping[str, Any]) -> bool:
    """Validate the arguments of the fast loop; returns whether to show a progress bar.

    Raises
    ------
    ValueError
        A Lightning trainer kwarg or a plan kwarg the fast loop does not implement.

    Examples
    --------
    >>> check_fast_kwargs(None, {"enable_progress_bar": False})
    False
    """
    bad_trainer = sorted(set(trainer_kwargs) - FAST_TRAINER_KWARGS)
    if bad_trainer:
        raise ValueError(
            f"train(fast=True) runs uniPort's own loop, not a Lightning Trainer, and does not take {bad_trainer}; "
            f"it accepts {sorted(FAST_TRAINER_KWARGS)} (pass fast=False for Lightning trainer arguments such as "
            "callbacks or loggers)."
        )
    bad_plan = sorted(set(plan_kwargs or {}) - FAST_PLAN_KWARGS)
    if bad_plan:
        raise ValueError(
            f"train(fast=True) does not implement plan_kwargs {bad_plan} (it implements {sorted(FAST_PLAN_KWARGS)}); "
            "pass fast=False to train through UniPortTrainingPlan."
        )
    if "enable_progress_bar" in trainer_kwargs and "progress_bar" in trainer_kwargs:
        if bool(trainer_kwargs["enable_progress_bar"]) != bool(trainer_kwargs["progress_bar"]):
            raise ValueError("enable_progress_bar and progress_bar disagree; pass one of them.")
    return bool(trainer_kwargs.get("enable_progress_bar", trainer_kwargs.get("progress_bar", True)))


def fast_train(
    module: torch.nn.Module,
    resident: ResidentFields,
    optimizer: torch.optim.Optimizer,
    *,
    max_epochs: int,
    batch_size: int,
    term_weights: Mapping[str, float],
    term_warmup: Mapping[str, Any] | None = None,
    term_warmup_unit: str = "epoch",
    plan_store: GlobalPlanStore | None = None,
    within_index: np.ndarray | None = None,
    balanced_sampler: BalancedSourceSampler | None = None,
    early_stopping: bool = False,
    early_stopping_patience: int = DEFAULTS.PATIENCE,
    early_stopping_monitor: str = "auto",
    progress_bar: bool = True,
) -> tuple[dict[str, pd.DataFrame], bool]:
    """Train ``module`` (a :class:`~scvi_ext.uniport.UniPortVAE` on ``resident.device``); see the module doc.

    Parameters
    ----------
    module
        The module.
    resident
        Registered fields (:class:`ResidentFields`).
    optimizer
        Adam over the module's trainable parameters.
    max_epochs, batch_size
        Epochs; cells per step (``n_obs // batch_size`` steps per epoch, last incomplete batch dropped).
    term_weights, term_warmup, term_warmup_unit
        Loss-term weights and schedules (as :class:`~scvi_ext.train.OTTrainingPlan`; ``{"ot": lambda_ot}``).
    plan_store, within_index
        Global OT plan (``save_ot``) and each row's index within its dataset.
    balanced_sampler
        Use this sampler's batches instead of random permutations.
    early_stopping, early_stopping_patience, early_stopping_monitor
        See :class:`~scvi_ext.uniport.LossEarlyStopper`.
    progress_bar
        tqdm bar over epochs.

    Returns
    -------
    tuple
        History (``{key: one-column DataFrame indexed by "epoch"}``, the Lightning runner's keys) and whether
        early stopping fired.

    Examples
    --------
    >>> history, fired = fast_train(module, resident, opt, max_epochs=2, batch_size=256,
    ...                             term_weights={"ot": 1.0})  # doctest: +SKIP
    """
    from scvi import REGISTRY_KEYS
    from tqdm.auto import tqdm

    device = resident.device
    n = int(resident.n_obs)
    if balanced_sampler is not None:
        steps = len(balanced_sampler)
    else:
        steps = n // batch_size
    if steps == 0:
        raise ValueError(f"batch_size={batch_size} is larger than the number of cells ({n}); lower it.")
    unknown = sorted(set(term_weights) - {"ot"})
    if unknown:
        raise ValueError(f"term_weights names {unknown}; uniPort's loss has one scheduled term, 'ot'.")
    schedules = build_term_schedules({"ot": 1.0, **term_weights}, term_warmup, term_warmup_unit)
    stopper = (
        LossEarlyStopper(module, early_stopping_patience, early_stopping_monitor, steps)
        if early_stopping
        else None
    )
    ref = int(module.reference_idx)
    rows: list[dict[str, float]] = []
    fired = False
    global_step = 0
    module.train()
    bar = tqdm(range(max_epochs), desc="uniPort (fast)", disable=not progress_bar, unit="epoch")
    for epoch in bar:
        if balanced_sampler is not None:
            order = torch.as_tensor(np.asarray(list(balanced_sampler), dtype=np.int64), device=device)
        else:
            order = torch.randperm(n, device=device)[: steps * batch_size].view(steps, batch_size)
        acc: torch.Tensor | None = None
        step_losses = torch.empty(steps, device=device)
        n_cells = 0
        weights: dict[str, float] = {}
        for i in range(steps):
            batch = resident.rows(order[i])
            weights = {name: s.value(epoch, global_step) for name, s in schedules.items()}
            loss_kwargs: dict[str, Any] = {"kl_weight": 1.0, **{f"{k}_weight": w for k, w in weights.items()}}
            blocks = None
            if plan_store is not None:
                blocks = plan_blocks(plan_store, within_index, ref, batch)
                loss_kwargs["ot_init"] = {
                    q: plan_store.gather(q, r, c).to(device) for q, (r, c) in blocks.items() if len(c)
                }
            _, _, out = module(batch, loss_kwargs=loss_kwargs)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            global_step += 1
            stats = step_stats(out)
            acc = stats if acc is None else acc + stats
            step_losses[i] = out.loss.detach()
            n_cells += int(batch[REGISTRY_KEYS.X_KEY].shape[0])
            if blocks is not None:
                for q, T in module._last_ot.items():
                    r, c = blocks[q]
                    plan_store.scatter(q, r, c, T)
        # the epoch's single host sync: summed stats and per-step losses
        read = torch.cat([acc, step_losses]).tolist()
        sums, losses = read[: acc.numel()], read[acc.numel() :]
        means = epoch_means_from_sums(sums, n_cells, weights)
        rows.append({"epoch": epoch, **means})
        bar.set_postfix(loss=f"{means['train_loss']:.1f}")
        if stopper is not None and stopper.update(means["train_loss"], losses):
            fired = True
            logger.info("uniPort early stopping at epoch %d (best weights restored)", epoch)
            break
    bar.close()
    module.eval()
    frame = pd.DataFrame(rows).set_index("epoch")
    history = {key: frame[[key]].astype(float) for key in frame.columns}
    return history, fired
