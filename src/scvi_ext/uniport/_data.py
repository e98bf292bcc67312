"""Input preparation for uniPort (spec §2): several AnnData -> one registered AnnData."""

from __future__ import annotations

from collections.abc import Mapping

import anndata
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._validation import check_finite, check_nonempty, get_matrix
from ._constants import DEFAULTS, KEYS, MODES


def _dense(X) -> np.ndarray:
    return np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float32)


def _maxabs(X: np.ndarray) -> np.ndarray:
    m = np.abs(X).max(0)
    return X / np.where(m > 0, m, 1.0)


def _log_norm_hvg(ad: AnnData, n_hvg: int | None, batch_key: str | None) -> AnnData:
    import scanpy as sc

    ad = ad.copy()
    sc.pp.normalize_total(ad)
    sc.pp.log1p(ad)
    if n_hvg is not None and ad.n_vars > n_hvg:
        bk = batch_key if batch_key is not None and ad.obs[batch_key].nunique() > 1 else None
        sc.pp.highly_variable_genes(ad, n_top_genes=n_hvg, batch_key=bk, subset=True)
    return ad


def _check_datasets(adatas: Mapping[str, AnnData], layer: str | None) -> None:
    if not isinstance(adatas, Mapping) or len(adatas) == 0:
        raise ValueError("adatas must be a non-empty mapping {dataset name: AnnData}.")
    for name, ad in adatas.items():
        if ad.n_obs == 0:
            raise ValueError(f"Dataset {name!r} has zero cells; every dataset needs at least one cell.")
        check_nonempty(ad)
        check_finite(get_matrix(ad, layer), f"dataset {name!r}")


def prepare_anndata(
    adatas: Mapping[str, AnnData],
    *,
    mode: str = MODES.HORIZONTAL,
    layer: str | None = None,
    n_common_hvg: int | None = DEFAULTS.N_HVG,
    n_specific_hvg: int | None = DEFAULTS.N_HVG,
    hvg_batch_key: bool = True,
    use_specific: bool = True,
    input_reps: Mapping[str, str] | None = None,
    preprocess: bool = True,
    source_key: str = KEYS.SOURCE_OBS,
) -> AnnData:
    """Build uniPort's registered AnnData from several datasets (spec §2, §10).

    Mode ``h``: X = common block (inner join on feature names, rows stacked dataset by dataset;
    ``normalize_total`` to the median, ``log1p``, ``n_common_hvg`` HVGs (per source when ``hvg_batch_key``),
    MaxAbs per source); ``obsm['uniport_specific']`` = each dataset's own block (``normalize_total``,
    ``log1p``, ``n_specific_hvg`` HVGs, MaxAbs) zero-padded to the widest. Mode ``v`` (same cells in every
    dataset = modality): X = first modality, ``obsm`` = the others side by side. Mode ``d``: X = each
    dataset's own input (its features, or ``obsm[input_reps[name]]`` min-max scaled) zero-padded.
    Widths and feature names go to ``uns['uniport']``. The inputs are not modified.

    Parameters
    ----------
    adatas
        ``{name: AnnData}`` in order (the last one is the default reference). Raw counts unless
        ``preprocess=False`` (then values must already lie in ``[0, 1]``).
    mode
        ``"h"``, ``"v"`` or ``"d"``.
    layer
        Layer with the counts (``None``: X).
    n_common_hvg, n_specific_hvg
        HVGs kept (``None``: all features).
    hvg_batch_key
        Select common HVGs per source (tutorials for MERFISH/PDAC do; PBMC does not).
    use_specific
        Mode ``h``: add the specific blocks (``False`` = uniPort-cm).
    input_reps
        Mode ``d``: ``{name: obsm key}`` to use instead of the features (e.g. ``{"atac": "X_lsi"}``).
    preprocess
        Run normalisation/log/HVG/scaling (``False``: take values as they are).
    source_key
        Name of the ``obs`` column with the dataset names.

    Returns
    -------
    anndata.AnnData
        Ready for :meth:`UniPort.setup_anndata` (``source_key`` categorical in dataset order).

    Raises
    ------
    ValueError
        No common features (mode ``h``), a dataset with zero cells, NaN values, unpaired cells in mode ``v``.

    Examples
    --------
    >>> ad = prepare_anndata({"rna": rna, "atac": atac_gene_activity})  # doctest: +SKIP
    >>> ad.obsm["uniport_specific"].shape  # doctest: +SKIP
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}.")
    _check_datasets(adatas, layer)
    names = list(adatas)
    raw = {}
    for name, ad in adatas.items():
        X = get_matrix(ad, layer)
        raw[name] = AnnData(
            sp.csr_matrix(X, dtype=np.float32) if preprocess else _dense(X),
            obs=pd.DataFrame(index=ad.obs_names.astype(str)),
            var=pd.DataFrame(index=ad.var_names.astype(str)),
        )
        raw[name].obs[source_key] = name
        raw[name].obsm.update(
            {k: np.asarray(v) for k, v in ad.obsm.items() if input_reps and k == input_reps.get(name)}
        )
    info: dict = {KEYS.UNS_MODE: mode, KEYS.UNS_SOURCES: names}

    def own_block(name: str, n_hvg: int | None) -> tuple[np.ndarray, list[str]]:
        ad = raw[name]
        if input_reps and name in input_reps:
            rep = np.asarray(ad.obsm[input_reps[name]], dtype=np.float32)
            lo, hi = rep.min(0), rep.max(0)
            rep = (rep - lo) / np.where(hi > lo, hi - lo, 1.0)
            return rep.astype(np.float32), [f"{input_reps[name]}_{i}" for i in range(rep.shape[1])]
        if preprocess:
            ad = _log_norm_hvg(ad, n_hvg, None)
            return _maxabs(_dense(ad.X)).astype(np.float32), ad.var_names.tolist()
        return _dense(ad.X), ad.var_names.tolist()

    if mode == MODES.VERTICAL:
        ref_names = raw[names[0]].obs_names
        for name in names[1:]:
            if raw[name].n_obs != len(ref_names) or not (raw[name].obs_names == ref_names).all():
                raise ValueError(
                    f"mode='v' needs the same cells in the same order in every modality; {name!r} differs "
                    f"from {names[0]!r}."
                )
        blocks = [own_block(n, n_specific_hvg) for n in names]
        X0, f0 = blocks[0]
        extra = [b for b, _ in blocks[1:]]
        out = AnnData(
            X0, obs=pd.DataFrame({source_key: "paired"}, index=ref_names), var=pd.DataFrame(index=f0)
        )
        out.obsm[KEYS.SPECIFIC_OBSM] = (
            np.concatenate(extra, 1) if extra else np.zeros((len(ref_names), 0), np.float32)
        )
        info[KEYS.UNS_SPECIFIC_FEATURES] = {n: f for n, (_, f) in zip(names[1:], blocks[1:], strict=True)}
        info[KEYS.UNS_SOURCES] = ["paired"]
        info["modalities"] = names
    elif mode == MODES.DIAGONAL:
        blocks = {n: own_block(n, n_specific_hvg) for n in names}
        width = max(b.shape[1] for b, _ in blocks.values())
        Xs = [np.pad(b, ((0, 0), (0, width - b.shape[1]))) for b, _ in blocks.values()]
        obs = pd.concat([raw[n].obs for n in names])
        out = AnnData(
            np.concatenate(Xs, 0), obs=obs, var=pd.DataFrame(index=[f"input_{i}" for i in range(width)])
        )
        info[KEYS.UNS_SPECIFIC_FEATURES] = {n: f for n, (_, f) in blocks.items()}
    else:
        others = [set(raw[n].var_names) for n in names[1:]]  # (built once: per-gene sets made this O(G^2))
        common = [g for g in raw[names[0]].var_names if all(g in o for o in others)]
        if not common:
            raise ValueError(
                f"The datasets {names} share no feature names; mode 'h' needs common features "
                "(use mode='d' for datasets without shared features)."
            )
        cm = anndata.concat([raw[n][:, common] for n in names], join="inner", index_unique=None)
        cm.obs_names_make_unique()
        if preprocess:
            cm = _log_norm_hvg(cm, n_common_hvg, source_key if hvg_batch_key else None)
            Xc = _dense(cm.X)
            for n in names:
                rows = (cm.obs[source_key] == n).to_numpy()
                Xc[rows] = _maxabs(Xc[rows])
        else:
            Xc = _dense(cm.X)
        out = AnnData(Xc, obs=cm.obs[[source_key]].copy(), var=pd.DataFrame(index=cm.var_names))
        if use_specific:
            blocks = {n: own_block(n, n_specific_hvg) for n in names}
            width = max(b.shape[1] for b, _ in blocks.values())
            out.obsm[KEYS.SPECIFIC_OBSM] = np.concatenate(
                [np.pad(b, ((0, 0), (0, width - b.shape[1]))) for b, _ in blocks.values()], 0
            ).astype(np.float32)
            info[KEYS.UNS_SPECIFIC_FEATURES] = {n: f for n, (_, f) in blocks.items()}
    out.obs[source_key] = pd.Categorical(out.obs[source_key], categories=info[KEYS.UNS_SOURCES])
    out.uns[KEYS.UNS] = info
    return out


def export_reference_inputs(
    adata: AnnData, source_key: str = KEYS.SOURCE_OBS
) -> tuple[list[AnnData], AnnData]:
    """The same prepared inputs in the layout of ``uniport.Run(adatas=..., adata_cm=...)`` (mode ``h``).

    For side-by-side runs with the reference implementation: ``adata_cm`` = X with ``obs['source']`` and
    integer ``obs['domain_id']``, rows grouped by dataset in order; ``adatas`` = each dataset's specific block
    (empty list for uniPort-cm).

    Parameters
    ----------
    adata
        Output of :func:`prepare_anndata` (mode ``h``).
    source_key
        Its source column.

    Returns
    -------
    adatas : list of anndata.AnnData
        Specific blocks (possibly empty).
    adata_cm : anndata.AnnData
        Common block, sorted by dataset.

    Examples
    --------
    >>> adatas, cm = export_reference_inputs(prepared)  # doctest: +SKIP
    """
    cats = list(adata.obs[source_key].cat.categories)
    order = np.concatenate([np.flatnonzero((adata.obs[source_key] == c).to_numpy()) for c in cats])
    cm = AnnData(
        _dense(adata.X)[order],
        obs=pd.DataFrame(index=adata.obs_names[order]),
        var=pd.DataFrame(index=adata.var_names),
    )
    cm.obs["source"] = adata.obs[source_key].astype(str).to_numpy()[order]
    codes = adata.obs[source_key].cat.codes.to_numpy()[order]
    cm.obs["domain_id"] = pd.Categorical(codes.astype(str), categories=[str(i) for i in range(len(cats))])
    adatas = []
    feats = adata.uns.get(KEYS.UNS, {}).get(KEYS.UNS_SPECIFIC_FEATURES)
    if feats and KEYS.SPECIFIC_OBSM in adata.obsm:
        S = np.asarray(adata.obsm[KEYS.SPECIFIC_OBSM])
        for i, c in enumerate(cats):
            rows = np.flatnonzero((adata.obs[source_key] == c).to_numpy())
            a = AnnData(
                S[rows][:, : len(feats[c])].astype(np.float32),
                obs=pd.DataFrame(index=adata.obs_names[rows]),
                var=pd.DataFrame(index=feats[c]),
            )
            a.obs["source"] = c
            a.obs["domain_id"] = pd.Categorical(
                [str(i)] * len(rows), categories=[str(j) for j in range(len(cats))]
            )
            adatas.append(a)
    return adatas, cm


def prepare_mudata(mdata, modalities: list[str] | None = None, **kwargs) -> AnnData:
    """:func:`prepare_anndata` on the modalities of a MuData (``mdata.mod``), e.g. ``mode="v"`` for paired data.

    ``mudata`` itself is not imported (any object with a ``.mod`` mapping works); install it to read
    ``.h5mu`` files.

    Parameters
    ----------
    mdata
        MuData (or any object with ``.mod``: ``{name: AnnData}``).
    modalities
        Names to use, in order (first = encoder input in mode ``v``; last = OT reference in ``h``/``d``);
        default all, in ``mdata.mod`` order.
    **kwargs
        Passed to :func:`prepare_anndata` (``mode``, HVG numbers, ...).

    Returns
    -------
    anndata.AnnData

    Examples
    --------
    >>> ad = prepare_mudata(mdata, ["atac", "rna"], mode="v")  # doctest: +SKIP
    """
    mods = getattr(mdata, "mod", None)
    if not isinstance(mods, Mapping):
        raise TypeError(
            "mdata must be a MuData (an object with a `.mod` mapping of modality name -> AnnData)."
        )
    names = list(mods) if modalities is None else list(modalities)
    missing = [n for n in names if n not in mods]
    if missing:
        raise KeyError(f"modalities {missing} are not in mdata.mod (available: {list(mods)}).")
    return prepare_anndata({n: mods[n] for n in names}, **kwargs)
