"""End-to-end uniPort workflows on raw-count AnnData: label transfer and spot deconvolution (used by the CLI)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._validation import check_obs_key
from ._constants import DEFAULTS, KEYS

DEFAULT_WORKFLOW_ITERATIONS = 1500
"""Minibatch steps of the workflows (the registry's CPU budget; the reference default is 30,000)."""

TRANSFER_METHODS = ("knn", "ot")


def _check_datasets(datasets: Mapping[str, AnnData], argument: str) -> None:
    if not isinstance(datasets, Mapping) or len(datasets) < 2:
        raise ValueError(
            f"{argument} needs at least 2 datasets (name -> AnnData), got {len(datasets or {})}."
        )
    for name, a in datasets.items():
        if not isinstance(a, AnnData):
            raise ValueError(f"{argument}[{name!r}] must be an AnnData, got {type(a).__name__}.")
        if a.n_obs == 0:
            raise ValueError(f"Dataset {name!r} has zero cells.")


def _train(
    prepared: AnnData,
    *,
    reference: str,
    max_iterations: int,
    seed: int,
    save_ot: bool,
    accelerator: str,
    progress_bar: bool,
    model_kwargs: Mapping[str, Any] | None,
):
    import scvi

    from ._model import UniPort

    scvi.settings.seed = int(seed)
    UniPort.setup_anndata(prepared, source_key=KEYS.SOURCE_OBS)
    model = UniPort(prepared, reference_source=reference, **dict(model_kwargs or {}))
    model.train(
        max_iterations=int(max_iterations),
        save_ot=save_ot,
        accelerator=accelerator,
        enable_progress_bar=progress_bar,
    )
    return model


def transfer_labels_datasets(
    datasets: Mapping[str, AnnData],
    labels_key: str,
    reference: str,
    *,
    method: str = "knn",
    layer: str | None = None,
    max_iterations: int = DEFAULT_WORKFLOW_ITERATIONS,
    seed: int = DEFAULTS.SEED,
    k: int = 5,
    balance: bool = False,
    min_cut: float | None = None,
    accelerator: str = "auto",
    progress_bar: bool = True,
    model_kwargs: Mapping[str, Any] | None = None,
) -> tuple[pd.DataFrame, AnnData]:
    """Train uniPort (mode ``h``) on raw-count datasets and transfer ``reference``'s labels to the others.

    Each dataset goes through :func:`~scvi_ext.uniport.prepare_anndata` (common and dataset-specific HVGs);
    the ``reference`` dataset is the OT reference. Labels move through kNN in the joint latent
    (``method="knn"``) or through the global OT plan (``"ot"``, spec §7.4).

    Parameters
    ----------
    datasets
        ``{name: AnnData}`` with raw counts (``X`` or ``layers[layer]``); at least 2.
    labels_key
        ``obs`` column of the reference dataset with its labels (query datasets need not have it).
    reference
        Name of the labelled dataset.
    method
        ``"knn"`` or ``"ot"``.
    layer
        Counts layer (default ``X``).
    max_iterations
        Training minibatch steps.
    seed
        Random seed.
    k, balance, min_cut
        Options of :meth:`UniPort.transfer_labels`.
    accelerator, progress_bar
        Training settings.
    model_kwargs
        Extra :class:`~scvi_ext.uniport.UniPort` arguments.

    Returns
    -------
    predictions, prepared
        ``predictions``: one row per query cell (index = cell names), columns ``dataset``, ``predicted``,
        ``confidence`` (score of the predicted label) and one score column per label; ``prepared``: the
        registered AnnData with ``obsm['X_uniport']`` (latent).

    Raises
    ------
    KeyError, ValueError
        Unknown reference or method, missing labels column, a dataset without cells, no shared features.

    Examples
    --------
    >>> pred, prepared = transfer_labels_datasets({"atac": atac_ga, "rna": rna}, "cell_type", "rna")  # doctest: +SKIP
    """
    from ._data import prepare_anndata

    _check_datasets(datasets, "datasets")
    if method not in TRANSFER_METHODS:
        raise ValueError(f"method must be one of {list(TRANSFER_METHODS)}, got {method!r}.")
    if reference not in datasets:
        raise KeyError(f"reference={reference!r} is not one of the datasets {list(datasets)}.")
    ref = datasets[reference]
    check_obs_key(ref, labels_key, "labels_key")
    ref_labels = ref.obs[labels_key]
    if ref_labels.isna().any():
        raise ValueError(
            f"The reference dataset {reference!r} has {int(ref_labels.isna().sum())} cells without a "
            f"{labels_key!r} label; drop them or fill them in."
        )
    names = [n for n in datasets if n != reference] + [reference]  # the OT reference is the last dataset
    prepared = prepare_anndata({n: datasets[n] for n in names}, layer=layer)
    labels = np.concatenate(
        [
            datasets[n].obs[labels_key].astype(str).to_numpy()
            if n == reference
            else np.full(datasets[n].n_obs, "", dtype=object)
            for n in names
        ]
    )
    prepared.obs[labels_key] = labels
    model = _train(
        prepared,
        reference=reference,
        max_iterations=max_iterations,
        seed=seed,
        save_ot=method == "ot",
        accelerator=accelerator,
        progress_bar=progress_bar,
        model_kwargs=model_kwargs,
    )
    prepared.obsm["X_uniport"] = model.get_latent_representation()
    tables = []
    for q in names[:-1]:
        probs = model.transfer_labels(
            labels_key, query_source=q, method=method, k=k, balance=balance, min_cut=min_cut
        )
        scores = probs.drop(columns="predicted")
        table = pd.DataFrame(
            {
                "dataset": q,
                "predicted": probs["predicted"].astype(str),
                "confidence": scores.max(axis=1).to_numpy(dtype=float),
            },
            index=probs.index,
        )
        tables.append(pd.concat([table, scores.astype(float)], axis=1))
    predictions = pd.concat(tables).fillna(0.0)
    return predictions, prepared


def deconvolve_spots(
    spots: AnnData,
    cells: AnnData,
    labels_key: str,
    *,
    layer: str | None = None,
    max_iterations: int = DEFAULT_WORKFLOW_ITERATIONS,
    seed: int = DEFAULTS.SEED,
    balance: bool = True,
    min_cut: float | None = None,
    accelerator: str = "auto",
    progress_bar: bool = True,
    model_kwargs: Mapping[str, Any] | None = None,
) -> tuple[pd.DataFrame, AnnData]:
    """Cell-type proportions of spatial spots from a labelled single-cell reference (spec §7.5).

    Trains uniPort (mode ``h``, spots = query, cells = OT reference, ``save_ot=True``) on raw counts and reads
    the proportions off the global plan (:meth:`UniPort.deconvolve`, PDAC tutorial setting ``balance=True``).

    Parameters
    ----------
    spots
        Spot x gene raw counts.
    cells
        Cell x gene raw counts with ``obs[labels_key]``.
    labels_key
        Cell-type column of ``cells``.
    layer
        Counts layer in both (default ``X``).
    max_iterations, seed
        Training steps and seed.
    balance, min_cut
        See :func:`~scvi_ext.uniport.plan_label_scores`.
    accelerator, progress_bar
        Training settings.
    model_kwargs
        Extra :class:`~scvi_ext.uniport.UniPort` arguments.

    Returns
    -------
    proportions, prepared
        Spots x cell types (rows sum to 1, index = spot names) and the registered AnnData (latent in
        ``obsm['X_uniport']``).

    Raises
    ------
    KeyError, ValueError
        Missing labels, empty inputs, no shared genes.

    Examples
    --------
    >>> props, _ = deconvolve_spots(spots, cells, "cell_type", max_iterations=600)  # doctest: +SKIP
    """
    from ._data import prepare_anndata

    _check_datasets({"spots": spots, "cells": cells}, "spots/cells")
    check_obs_key(cells, labels_key, "labels_key")
    if cells.obs[labels_key].isna().any():
        raise ValueError(f"{int(cells.obs[labels_key].isna().sum())} cells have no {labels_key!r} label.")
    prepared = prepare_anndata({"spots": spots, "cells": cells}, layer=layer)
    prepared.obs[labels_key] = np.concatenate(
        [np.full(spots.n_obs, "", dtype=object), cells.obs[labels_key].astype(str).to_numpy()]
    )
    model = _train(
        prepared,
        reference="cells",
        max_iterations=max_iterations,
        seed=seed,
        save_ot=True,
        accelerator=accelerator,
        progress_bar=progress_bar,
        model_kwargs=model_kwargs,
    )
    prepared.obsm["X_uniport"] = model.get_latent_representation()
    props = model.deconvolve(labels_key, spot_source="spots", balance=balance, min_cut=min_cut)
    props.index = spots.obs_names.astype(str)
    return props, prepared
