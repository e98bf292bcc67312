"""PIANO's fast training loop (piano.md §2.2): device-resident data, on-device shuffling, no per-step sync.

No Lightning, no DataLoader, no collate: each step gathers 128 rows of one resident tensor (dense, or CSR
expanded to dense rows by a pure-torch scatter), updates ``beta`` in place, and runs forward, backward and
AdamW; losses are accumulated on the device and read back once per epoch. With CUDA the whole step can be
``torch.compile``-d (static shapes: ``drop_last``, dense NLL).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from ._constants import DATA_MODES
from ._constants import PIANO_DEFAULTS as D

logger = logging.getLogger(__name__)


def available_memory_bytes(device: torch.device) -> int:
    """Free memory of ``device``: ``torch.cuda.mem_get_info`` on CUDA, ``MemAvailable`` of the host otherwise.

    Parameters
    ----------
    device
        Target device.

    Returns
    -------
    int
        Bytes.

    Examples
    --------
    >>> available_memory_bytes(torch.device("cpu")) > 0
    True
    """
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - non-Linux
        pass
    return 8 * 1024**3  # pragma: no cover


def dense_bytes(n_obs: int, n_vars: int, integer_max: float | None) -> int:
    """Bytes of the dense resident matrix: 16-bit when all counts are integers <= 65535, else float32.

    Examples
    --------
    >>> dense_bytes(200_000, 2000, 100.0)
    800000000
    """
    itemsize = 2 if integer_max is not None and integer_max <= 65535 else 4
    return int(n_obs) * int(n_vars) * itemsize


def choose_data_mode(
    n_obs: int,
    n_vars: int,
    nnz: int,
    integer_max: float | None,
    device: torch.device,
    free_bytes: int | None = None,
    fraction: float = D.DENSE_MEMORY_FRACTION,
) -> str:
    """The documented rule of ``data_on_device="auto"`` (piano.md §5.1).

    ``"dense"`` if the dense matrix (uint16 for integer counts <= 65535, else float32; ``n * G * itemsize``
    bytes) takes less than ``fraction`` (50 %) of the device's free memory; else ``"csr"`` if the CSR arrays
    (``nnz * (4 + itemsize) + 8 (n + 1)`` bytes) do; else ``"host"`` (CSR kept in host memory, rows expanded
    there and copied per step).

    Parameters
    ----------
    n_obs, n_vars, nnz
        Shape and number of stored non-zeros.
    integer_max
        Largest count if all counts are integers, else ``None``.
    device
        Training device.
    free_bytes
        Override the measured free memory (for tests and planning).
    fraction
        Share of free memory the data may take.

    Returns
    -------
    str
        ``"dense"``, ``"csr"`` or ``"host"``.

    Examples
    --------
    >>> choose_data_mode(1000, 2000, 10**5, 50.0, torch.device("cpu"), free_bytes=10**9)
    'dense'
    >>> choose_data_mode(10**6, 2000, 10**8, 50.0, torch.device("cpu"), free_bytes=2 * 10**9)
    'csr'
    """
    free = available_memory_bytes(device) if free_bytes is None else int(free_bytes)
    if dense_bytes(n_obs, n_vars, integer_max) < fraction * free:
        return "dense"
    itemsize = 2 if integer_max is not None and integer_max <= 65535 else 4
    if int(nnz) * (4 + itemsize) + 8 * (int(n_obs) + 1) < fraction * free:
        return "csr"
    return "host"


def expand_csr_rows(
    indptr: torch.Tensor, indices: torch.Tensor, data: torch.Tensor, rows: torch.Tensor, n_cols: int
) -> torch.Tensor:
    """Dense ``[len(rows), n_cols]`` float32 copy of the selected CSR rows, in pure torch (no Triton).

    ``repeat_interleave`` over the row lengths gives, for every stored entry of the selected rows, its output
    row and its position in ``indices``/``data``; one ``index_put_`` scatters the values.

    Parameters
    ----------
    indptr
        ``[n + 1]`` int64 row pointers.
    indices
        ``[nnz]`` column indices (any integer dtype).
    data
        ``[nnz]`` values (any numeric dtype).
    rows
        ``[B]`` int64 row indices.
    n_cols
        Number of columns.

    Returns
    -------
    torch.Tensor
        Dense rows, float32, on ``data.device``.

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> m = sp.csr_matrix(np.array([[0, 2, 0], [1, 0, 3]]))
    >>> t = lambda a: torch.as_tensor(a)
    >>> expand_csr_rows(t(m.indptr).long(), t(m.indices), t(m.data), torch.tensor([1, 0]), 3)
    tensor([[1., 0., 3.],
            [0., 2., 0.]])
    """
    starts = indptr.index_select(0, rows)
    lengths = indptr.index_select(0, rows + 1) - starts
    B = rows.shape[0]
    out = torch.zeros(B, n_cols, dtype=torch.float32, device=data.device)
    total = int(lengths.sum())  # one host sync per step (documented cost of the CSR mode)
    if total == 0:
        return out
    out_row = torch.repeat_interleave(torch.arange(B, device=data.device), lengths, output_size=total)
    seg_start = torch.cumsum(lengths, 0) - lengths
    within = torch.arange(total, device=data.device) - seg_start.index_select(0, out_row)
    src = starts.index_select(0, out_row) + within
    cols = indices.index_select(0, src).long()
    out.index_put_((out_row, cols), _as_float(data.index_select(0, src)))
    return out


def _as_float(t: torch.Tensor) -> torch.Tensor:
    """float32 of a tensor; int16 storage holds uint16 counts (bit pattern), read back with a 0xFFFF mask."""
    if t.dtype == torch.int16:
        return (t.to(torch.int32) & 0xFFFF).float()
    return t.float()


@dataclass
class ResidentData:
    """Counts and covariates resident on one device, gathered row-wise by index tensors.

    Attributes
    ----------
    mode
        ``"dense"``, ``"csr"`` or ``"host"``.
    n_obs, n_vars
        Shape.
    device
        Device the minibatches are produced on.
    """

    mode: str
    n_obs: int
    n_vars: int
    device: torch.device
    dense: torch.Tensor | None = None
    indptr: torch.Tensor | None = None
    indices: torch.Tensor | None = None
    data: torch.Tensor | None = None
    cov: torch.Tensor | None = None
    lgamma_x1: torch.Tensor | None = None  # per-cell sum_g lgamma(x_g + 1): a data constant of the NB log-pmf

    def nbytes(self) -> int:
        """Bytes held by the resident tensors."""
        ts = [self.dense, self.indptr, self.indices, self.data, self.cov]
        return int(sum(t.numel() * t.element_size() for t in ts if t is not None))

    def rows(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Dense float32 counts, covariates and ``sum_g lgamma(x_g + 1)`` of cells ``idx`` on :attr:`device`."""
        if self.mode == "dense":
            xb = _as_float(self.dense.index_select(0, idx))
        else:
            src_idx = idx if self.mode == "csr" else idx.cpu()
            xb = expand_csr_rows(self.indptr, self.indices, self.data, src_idx, self.n_vars)
            if self.mode == "host":
                xb = xb.pin_memory().to(self.device, non_blocking=True) if self.device.type == "cuda" else xb
        return xb, self.cov.index_select(0, idx), self.lgamma_x1.index_select(0, idx)


def _integer_max(X) -> float | None:
    """Largest value if all stored values are integers, else ``None`` (chunked: no full-size temporaries)."""
    from .._validation import _first_noninteger, _values

    vals = _values(X)
    if vals.size == 0:
        return 0.0
    if vals.dtype.kind in "iu" or _first_noninteger(vals) is None:
        return float(vals.max())
    return None


def _row_lgamma_sums(X, block: int = 8192) -> np.ndarray:
    """``sum_g lgamma(x_g + 1)`` per cell, computed over row blocks so that only one block is ever float64.

    Examples
    --------
    >>> _row_lgamma_sums(np.array([[0, 2], [3, 0]])).round(4)
    array([0.6931, 1.7918])
    """
    from scipy.special import gammaln

    n = X.shape[0]
    out = np.empty(n, dtype=np.float64)
    Xc = X.tocsr() if sp.issparse(X) and not sp.isspmatrix_csr(X) else X
    for s in range(0, n, block):
        part = Xc[s : s + block]
        if sp.issparse(part):
            vals = gammaln(np.asarray(part.data, dtype=np.float64) + 1.0)
            lengths = np.diff(part.indptr)
            sums = np.zeros(part.shape[0])
            nz = lengths > 0
            sums[nz] = np.add.reduceat(vals, part.indptr[:-1][nz]) if vals.size else 0.0
            out[s : s + block] = sums
        else:
            out[s : s + block] = gammaln(np.asarray(part, dtype=np.float64) + 1.0).sum(1)
    return out


def make_resident_data(
    X, cov: torch.Tensor, device: torch.device, data_on_device: str | bool = "auto"
) -> ResidentData:
    """Put counts ``X`` (dense or scipy sparse) and covariates ``cov`` on ``device`` in the chosen layout.

    Parameters
    ----------
    X
        Cells x genes counts.
    cov
        ``[n, P]`` float32 covariates.
    device
        Training device.
    data_on_device
        ``"auto"`` (:func:`choose_data_mode`), ``"dense"``, ``"csr"``, ``"host"`` or ``False`` (= ``"host"``).

    Returns
    -------
    ResidentData
        Ready to serve minibatches.

    Examples
    --------
    >>> d = make_resident_data(np.ones((4, 3)), torch.zeros(4, 0), torch.device("cpu"))
    >>> d.mode, d.rows(torch.tensor([0, 1]))[0].shape
    ('dense', torch.Size([2, 3]))
    """
    mode = "host" if data_on_device is False else str(data_on_device)
    if mode not in DATA_MODES:
        raise ValueError(f"data_on_device must be one of {DATA_MODES} or False, got {data_on_device!r}.")
    n, G = X.shape
    imax = _integer_max(X)
    nnz = X.nnz if sp.issparse(X) else int(np.count_nonzero(X))
    if mode == "auto":
        mode = choose_data_mode(n, G, nnz, imax, device)
    small_int = imax is not None and imax <= 65535
    lgx1 = torch.as_tensor(_row_lgamma_sums(X), dtype=torch.float32)
    out = ResidentData(
        mode=mode,
        n_obs=n,
        n_vars=G,
        device=device,
        cov=cov.to(device).float().contiguous(),
        lgamma_x1=lgx1.to(device),
    )
    if mode == "dense":
        dtype = np.uint16 if small_int else np.float32
        if sp.issparse(X):
            dense = np.zeros((n, G), dtype=dtype)
            Xc = sp.csr_matrix(X)
            step = 8192  # densify in chunks: peak extra memory stays small
            for s in range(0, n, step):
                dense[s : s + step] = Xc[s : s + step].toarray().astype(dtype, copy=False)
        else:
            dense = np.asarray(X).astype(dtype, copy=False)
        dense = np.ascontiguousarray(dense)
        # uint16 counts are stored as int16 bit patterns: torch's index_select lacks uint16 kernels
        out.dense = torch.from_numpy(dense.view(np.int16) if small_int else dense).to(device)
    else:
        Xc = sp.csr_matrix(X)
        data = Xc.data.astype(np.uint16 if small_int else np.float32, copy=False)
        target = device if mode == "csr" else torch.device("cpu")
        out.indptr = torch.from_numpy(Xc.indptr.astype(np.int64, copy=False)).to(target)
        out.indices = torch.from_numpy(Xc.indices.astype(np.int32, copy=False)).to(target)
        out.data = torch.from_numpy(data.view(np.int16) if small_int else data).to(target)
    return out


def kl_weight_at(
    epoch: int,
    step_in_epoch: int,
    steps_per_epoch: int,
    n_epochs_kl_warmup: float | None,
    max_kl_weight: float,
    min_kl_weight: float,
) -> float:
    """Per-step KL weight ``min + (e + i / N_b) / E * (max - min)``, capped at ``max`` (piano.md §2.1).

    Examples
    --------
    >>> kl_weight_at(1, 5, 10, 400, 1.0, 0.0)
    0.00375
    """
    if not n_epochs_kl_warmup:
        return float(max_kl_weight)
    frac = (epoch + step_in_epoch / steps_per_epoch) / n_epochs_kl_warmup
    return float(min(max_kl_weight, min_kl_weight + frac * (max_kl_weight - min_kl_weight)))


def fast_train(
    module: torch.nn.Module,
    resident: ResidentData,
    *,
    max_epochs: int,
    batch_size: int = D.BATCH_SIZE,
    lr: float = D.LR,
    weight_decay: float = D.WEIGHT_DECAY,
    n_epochs_kl_warmup: float | None = D.N_EPOCHS_KL_WARMUP,
    max_kl_weight: float = D.MAX_KL_WEIGHT,
    min_kl_weight: float = D.MIN_KL_WEIGHT,
    compile: bool = False,
    early_stopping: bool = False,
    min_delta: float = D.EARLY_STOPPING_MIN_DELTA,
    patience: int = D.EARLY_STOPPING_PATIENCE,
    checkpoint_every_n_epochs: int | None = None,
    checkpoint_dir: str | Path | None = None,
    progress_bar: bool = True,
    seed: int | None = None,
    permutations: list[torch.Tensor] | None = None,
    timings: dict | None = None,
    limit_train_batches: int | None = None,
) -> tuple[dict[str, pd.DataFrame], float]:
    """Train ``module`` with the §2.2 loop and return ``(history, final kl weight)``.

    Parameters
    ----------
    module
        A :class:`~scvi_ext.piano.PIANOModule` already on ``resident.device``.
    resident
        Data from :func:`make_resident_data`.
    max_epochs, batch_size
        Epochs; cells per step (``drop_last``: ``n // batch_size`` steps per epoch).
    lr, weight_decay
        AdamW (only parameters with ``requires_grad`` are optimised).
    n_epochs_kl_warmup, max_kl_weight, min_kl_weight
        Per-step KL warm-up (:func:`kl_weight_at`); ``n_epochs_kl_warmup=None`` keeps ``max_kl_weight``.
    compile
        ``torch.compile`` the step (CUDA).
    early_stopping, min_delta, patience
        Stop when the unweighted per-cell ELBO has not improved by ``min_delta`` for ``patience`` epochs.
    checkpoint_every_n_epochs, checkpoint_dir
        Save ``state_dict`` every k epochs to ``checkpoint_dir/epoch=<e>.pt``.
    progress_bar
        Show a tqdm bar over epochs.
    seed
        Seed of the on-device shuffling generator.
    permutations
        Fixed per-epoch cell orders (tests comparing with Lightning); overrides shuffling.
    timings
        If a dict, filled with ``epoch_seconds`` (list) and ``steps_per_epoch``.
    limit_train_batches
        Run only the first k steps of each (shuffled) epoch, as Lightning's argument of that name (benchmarks);
        the KL schedule still counts full epochs.

    Returns
    -------
    tuple
        History (``dict`` of one-column DataFrames indexed by epoch, scvi's keys) and the last KL weight.
    """
    from tqdm.auto import tqdm

    device = resident.device
    n = resident.n_obs
    steps = n // batch_size
    if steps == 0:
        raise ValueError(f"batch_size={batch_size} is larger than the number of cells ({n}); lower it.")
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ValueError(
            "Nothing to train: no parameter requires a gradient (a query without new covariate categories needs "
            "no training; its latent is `reference.get_latent_representation(query)`)."
        )
    # fused AdamW (one kernel over all parameters) on CPU and CUDA; capturable for compiled CUDA steps
    opt_kwargs: dict = {"lr": lr, "weight_decay": weight_decay, "fused": True}
    if compile and device.type == "cuda":
        opt_kwargs.pop("fused")
        opt_kwargs["capturable"] = True
    optimizer = torch.optim.AdamW(params, **opt_kwargs)
    beta = torch.zeros((), device=device)

    def step(xb: torch.Tensor, cb: torch.Tensor, lb: torch.Tensor, beta_t: torch.Tensor) -> torch.Tensor:
        loss, nll, kl, adv = module.fast_loss(xb, cb, beta_t, None if compile else lb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return torch.stack([loss.detach() * xb.shape[0], nll, kl, adv])

    module.sparse_nll = not compile
    step_fn = torch.compile(step, mode="max-autotune-no-cudagraphs") if compile else step
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed) if seed is not None else int(torch.initial_seed() % (2**63)))
    rec: dict[str, list[float]] = {k: [] for k in ("loss", "elbo", "nll", "kl", "kl_weight", "adv")}
    best, since_best = float("inf"), 0
    module.train()
    epoch_seconds: list[float] = []
    bar = tqdm(range(max_epochs), desc="PIANO (fast)", disable=not progress_bar, unit="epoch")
    beta_value = min_kl_weight
    for epoch in bar:
        t0 = time.perf_counter()
        perm = (
            permutations[epoch].to(device)
            if permutations is not None
            else torch.randperm(n, device=device, generator=gen)
        )
        acc = torch.zeros(4, device=device)
        for i in range(steps if not limit_train_batches else min(steps, int(limit_train_batches))):
            idx = perm[i * batch_size : (i + 1) * batch_size]
            xb, cb, lb = resident.rows(idx)
            beta_value = kl_weight_at(epoch, i, steps, n_epochs_kl_warmup, max_kl_weight, min_kl_weight)
            beta.fill_(beta_value)
            acc += step_fn(xb, cb, lb, beta)
        n_done = steps if not limit_train_batches else min(steps, int(limit_train_batches))
        vals = (acc / (n_done * batch_size)).tolist()  # the epoch's single host sync
        epoch_seconds.append(time.perf_counter() - t0)
        loss_v, nll_v, kl_v, adv_v = vals
        rec["loss"].append(loss_v)
        rec["nll"].append(nll_v)
        rec["kl"].append(kl_v)
        rec["elbo"].append(nll_v + kl_v)
        rec["kl_weight"].append(beta_value)
        rec["adv"].append(adv_v)
        bar.set_postfix(elbo=f"{nll_v + kl_v:.1f}", kl_weight=f"{beta_value:.3f}")
        if checkpoint_every_n_epochs and (epoch + 1) % checkpoint_every_n_epochs == 0:
            path = Path(checkpoint_dir or "piano_checkpoints")
            path.mkdir(parents=True, exist_ok=True)
            torch.save(module.state_dict(), path / f"epoch={epoch + 1}.pt")
        if not np.isfinite(nll_v + kl_v):
            raise FloatingPointError(
                f"PIANO training diverged at epoch {epoch} (ELBO {nll_v + kl_v}); lower lr."
            )
        if early_stopping:
            if nll_v + kl_v < best - min_delta:
                best, since_best = nll_v + kl_v, 0
            else:
                since_best += 1
                if since_best >= patience:
                    logger.info("PIANO early stopping at epoch %d", epoch)
                    break
    module.eval()
    if timings is not None:
        timings["epoch_seconds"] = epoch_seconds
        timings["steps_per_epoch"] = (
            steps if not limit_train_batches else min(steps, int(limit_train_batches))
        )
    idx = pd.Index(range(len(rec["elbo"])), name="epoch")

    def frame(name: str, values: list[float]) -> pd.DataFrame:
        return pd.DataFrame({name: values}, index=idx)

    history = {
        "train_loss": frame("train_loss", rec["loss"]),
        "elbo_train": frame("elbo_train", rec["elbo"]),
        "reconstruction_loss_train": frame("reconstruction_loss_train", rec["nll"]),
        "kl_local_train": frame("kl_local_train", rec["kl"]),
        "kl_global_train": frame("kl_global_train", [0.0] * len(idx)),
        "kl_weight": frame("kl_weight", rec["kl_weight"]),
    }
    if getattr(module, "classifier", None) is not None:
        history["adv_train"] = frame("adv_train", rec["adv"])
    return history, float(beta_value)
