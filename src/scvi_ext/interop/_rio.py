"""Read Seurat / SingleCellExperiment files into AnnData and write AnnData back as Seurat (rpy2, extra ``r``).

Needs R with the SeuratObject package (Debian: ``r-cran-seurat``), ``rpy2<3.6`` (3.6 fails against R 4.2
with ``undefined symbol R_ParentEnv``) and, for SingleCellExperiment input, ``anndata2ri`` and the
SingleCellExperiment R package (``r-bioc-singlecellexperiment``). Install the Python side with
``pip install 'scvi-ext[r]'``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

if TYPE_CHECKING:
    from anndata import AnnData

#: File suffixes :func:`read_r` understands (lower case).
R_SUFFIXES: tuple[str, ...] = (".rds", ".rdata", ".rda")
#: ``obs`` column that :func:`read_r` fills with the R object's name when a file holds several matrices.
OBJECT_COLUMN = "object"

# R code run once per session: flatten an R object into plain vectors that rpy2 converts without surprises.
_R_HELPERS = r"""
.scviext_sparse <- function(m) {
  m <- methods::as(m, "CsparseMatrix")
  if (!methods::is(m, "dgCMatrix")) m <- methods::as(m, "dgCMatrix")
  list(i = m@i, p = m@p, x = as.numeric(m@x), dims = dim(m),
       genes = as.character(rownames(m)), cells = as.character(colnames(m)))
}
.scviext_meta <- function(df) {
  out <- lapply(df, function(v) if (is.numeric(v)) as.numeric(v) else as.character(v))
  names(out) <- colnames(df)
  out
}
.scviext_layer <- function(obj, assay, layer) {
  a <- obj[[assay]]
  m <- if (methods::is(a, "Assay5")) {
    tryCatch(SeuratObject::LayerData(SeuratObject::JoinLayers(a, layers = layer), layer = layer),
             error = function(e) NULL)
  } else {
    tryCatch(SeuratObject::GetAssayData(a, slot = layer), error = function(e) NULL)
  }
  if (is.null(m) || length(m) == 0 || nrow(m) == 0) return(NULL)
  .scviext_sparse(m)
}
.scviext_seurat <- function(obj, assay) {
  if (is.null(assay)) assay <- SeuratObject::DefaultAssay(obj)
  if (!assay %in% names(obj@assays)) stop(sprintf("assay '%s' is not in the object (assays: %s)", assay,
                                                   paste(names(obj@assays), collapse = ", ")))
  reds <- list()
  for (r in SeuratObject::Reductions(obj)) {
    emb <- SeuratObject::Embeddings(obj, reduction = r)
    reds[[r]] <- list(x = as.numeric(emb), dims = dim(emb))
  }
  list(assay = assay, counts = .scviext_layer(obj, assay, "counts"), data = .scviext_layer(obj, assay, "data"),
       meta = .scviext_meta(obj@meta.data), cells = rownames(obj@meta.data),
       variable = as.character(SeuratObject::VariableFeatures(obj[[assay]])), reductions = reds)
}
.scviext_load <- function(path) {
  if (grepl("\\.rds$", tolower(path))) return(list(object = readRDS(path)))
  env <- new.env()
  nms <- load(path, envir = env)
  mget(nms, envir = env)
}
"""

_helpers_loaded = False


def _r():
    """Return ``rpy2.robjects`` with the helpers defined, or raise an ImportError that says what to install."""
    global _helpers_loaded
    try:
        import rpy2.robjects as ro
    except Exception as err:  # noqa: BLE001 - rpy2 raises various errors when R is missing
        raise ImportError(
            "Reading and writing R objects needs R and rpy2<3.6: apt-get install r-base-core r-cran-seurat; "
            f"pip install 'scvi-ext[r]' ({err})"
        ) from err
    if not _helpers_loaded:
        ro.r(_R_HELPERS)
        _helpers_loaded = True
    return ro


def _vec(x) -> np.ndarray:
    return np.asarray(list(x)) if x is not None else np.asarray([])


def _named(rlist) -> dict[str, Any]:
    try:
        names = list(rlist.names)
    except TypeError:  # NULL names
        names = []
    return {str(n): rlist[i] for i, n in enumerate(names)}


def _csr(parts) -> tuple[sp.csr_matrix, list[str], list[str]]:
    d = _named(parts)
    n_genes, n_cells = (int(v) for v in d["dims"])
    X = sp.csr_matrix(
        (np.asarray(d["x"], dtype=np.float32), np.asarray(d["i"], dtype=np.int32), np.asarray(d["p"], dtype=np.int64)),
        shape=(n_cells, n_genes),
    )
    return X, [str(g) for g in d["genes"]], [str(c) for c in d["cells"]]


def _obs(meta, cells: Sequence[str]) -> pd.DataFrame:
    frame = pd.DataFrame(index=pd.Index(list(cells)))
    for name, values in _named(meta).items():
        vals = list(values)
        if vals and isinstance(vals[0], str):
            frame[name] = pd.Categorical([None if v == "NA" else v for v in vals])
        else:
            frame[name] = np.asarray(vals, dtype=np.float64)
    return frame


def _seurat_to_anndata(ro, obj, assay: str | None) -> AnnData:
    import anndata

    parts = _named(ro.r[".scviext_seurat"](obj, ro.NULL if assay is None else assay))
    cells = [str(c) for c in parts["cells"]]
    has_counts = parts["counts"] is not ro.NULL and not isinstance(parts["counts"], type(ro.NULL))
    has_data = parts["data"] is not ro.NULL and not isinstance(parts["data"], type(ro.NULL))
    if not has_counts and not has_data:
        raise ValueError(f"assay {parts['assay'][0]!r} has neither counts nor data.")
    layers: dict[str, sp.csr_matrix] = {}
    X = genes = None
    if has_counts:
        X, genes, _ = _csr(parts["counts"])
        layers["counts"] = X
    if has_data:
        D, g2, _ = _csr(parts["data"])
        if genes is None:
            X, genes = D, g2
        elif g2 == genes:
            layers["data"] = D
    adata = anndata.AnnData(X=X, obs=_obs(parts["meta"], cells), var=pd.DataFrame(index=pd.Index(genes)),
                            layers=layers)
    variable = set(str(v) for v in parts["variable"])
    adata.var["highly_variable"] = [g in variable for g in adata.var_names]
    for name, red in _named(parts["reductions"]).items():
        r = _named(red)
        n, k = (int(v) for v in r["dims"])
        adata.obsm[f"X_{name}"] = np.asarray(r["x"], dtype=np.float32).reshape((n, k), order="F")
    adata.uns["seurat"] = {"assay": str(parts["assay"][0])}
    return adata


def _sce_to_anndata(ro, obj) -> AnnData:
    try:
        import anndata2ri
        from rpy2.robjects.conversion import localconverter
    except ImportError as err:
        raise ImportError("SingleCellExperiment input needs anndata2ri: pip install 'scvi-ext[r]'") from err
    from .._validation import looks_like_counts

    with localconverter(anndata2ri.converter):
        adata = ro.conversion.get_conversion().rpy2py(obj)
    if "counts" not in adata.layers and adata.X is not None and looks_like_counts(adata.X):
        adata.layers["counts"] = adata.X.copy()  # anndata2ri puts a lone 'counts' assay in X
    return adata


def read_r(path: str | Path, *, object_name: str | None = None, assay: str | None = None) -> AnnData:
    """Read a Seurat or SingleCellExperiment object (or count matrices) from an ``.rds``/``.RData`` file.

    A Seurat object gives raw counts in ``X`` and ``layers['counts']`` (the log data in ``layers['data']``
    when present), ``meta.data`` as ``obs``, the variable features as ``var['highly_variable']`` and each
    reduction as ``obsm['X_<name>']``. A SingleCellExperiment is converted with anndata2ri. An ``.RData``
    file with several sparse count matrices (genes x cells) gives their cells stacked, with the object name
    in ``obs['object']`` (e.g. harmony's ``pbmc_stim.RData``: ``pbmc.ctrl``/``pbmc.stim``).

    Parameters
    ----------
    path
        ``.rds``, ``.RData`` or ``.rda`` file.
    object_name
        Which object of an ``.RData`` file to read (default: its only Seurat/SCE object, or all matrices).
    assay
        Seurat assay (default: the object's default assay).

    Returns
    -------
    AnnData

    Examples
    --------
    >>> adata = read_r("../shared/data/cider_pancreas_baron/pancreas.RData")  # doctest: +SKIP
    >>> adata.obs["orig.ident"].nunique()  # doctest: +SKIP
    6
    """
    import anndata

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r}: no such file")
    if path.suffix.lower() not in R_SUFFIXES:
        raise ValueError(f"{str(path)!r}: expected one of {list(R_SUFFIXES)}")
    ro = _r()
    objects = _named(ro.r[".scviext_load"](str(path)))
    if object_name is not None:
        if object_name not in objects:
            raise KeyError(f"object_name={object_name!r} is not in {path.name} (objects: {sorted(objects)})")
        objects = {object_name: objects[object_name]}
    classes = {name: list(ro.r["class"](obj)) for name, obj in objects.items()}
    seurat = [n for n, c in classes.items() if "Seurat" in c]
    sce = [n for n, c in classes.items() if "SingleCellExperiment" in c]
    matrices = [n for n, c in classes.items() if any(k in c for k in ("dgCMatrix", "dgTMatrix", "matrix"))]
    found = seurat + sce
    if len(found) > 1:
        raise ValueError(f"{path.name} holds several objects ({found}); pass object_name=.")
    if seurat:
        return _seurat_to_anndata(ro, objects[seurat[0]], assay)
    if sce:
        return _sce_to_anndata(ro, objects[sce[0]])
    if not matrices:
        raise ValueError(f"{path.name} holds no Seurat, SingleCellExperiment or matrix object (classes: {classes})")
    pieces = []
    for name in matrices:
        X, genes, cells = _csr(ro.r[".scviext_sparse"](objects[name]))
        obs = pd.DataFrame({OBJECT_COLUMN: pd.Categorical([name] * len(cells))}, index=pd.Index(cells))
        pieces.append(anndata.AnnData(X=X, obs=obs, var=pd.DataFrame(index=pd.Index(genes))))
    adata = anndata.concat(pieces, join="outer", fill_value=0) if len(pieces) > 1 else pieces[0]
    adata.obs[OBJECT_COLUMN] = pd.Categorical(adata.obs[OBJECT_COLUMN].astype(str))
    adata.X = sp.csr_matrix(adata.X)
    adata.obs_names_make_unique()
    return adata


def write_seurat(
    adata: AnnData,
    path: str | Path,
    *,
    counts_layer: str | None = "counts",
    assay: str = "RNA",
    obsm_keys: Sequence[str] | None = None,
) -> Path:
    """Write ``adata`` as a Seurat object to an ``.rds`` file (``readRDS()`` in R gives it back).

    Counts (``layers[counts_layer]``, or ``X`` when that layer is absent) become the assay's counts, a
    log-normalised ``X`` (when counts come from a layer) its data; ``obs`` becomes meta.data and each
    ``obsm['X_<name>']`` a reduction ``<name>`` with key ``<NAME>_``.

    Parameters
    ----------
    adata
        AnnData to write (not modified).
    path
        Output ``.rds`` file.
    counts_layer
        Layer with raw counts (``None``: ``X``).
    assay
        Name of the Seurat assay.
    obsm_keys
        Which ``obsm`` entries to write (default: all 2-D ones).

    Returns
    -------
    pathlib.Path
        ``path``.

    Examples
    --------
    >>> write_seurat(adata, "out/integrated.rds")  # doctest: +SKIP
    """
    ro = _r()
    from rpy2.robjects.vectors import FloatVector, IntVector, ListVector, StrVector

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    use_layer = counts_layer is not None and counts_layer in adata.layers
    counts = sp.csc_matrix(adata.layers[counts_layer] if use_layer else adata.X, dtype=np.float64)

    def dgc(m: sp.csc_matrix):  # cells x genes CSR == genes x cells CSC: ship the CSR arrays
        csr = sp.csr_matrix(m)
        csr.sort_indices()
        return ListVector({"i": IntVector(csr.indices.astype(int).tolist()),
                           "p": IntVector(csr.indptr.astype(int).tolist()),
                           "x": FloatVector(csr.data.astype(float).tolist()),
                           "dims": IntVector([adata.n_vars, adata.n_obs])})

    meta = {}
    for col in adata.obs.columns:
        v = adata.obs[col]
        if pd.api.types.is_numeric_dtype(v) and not pd.api.types.is_bool_dtype(v):
            meta[str(col)] = FloatVector(np.asarray(v, dtype=float).tolist())
        else:
            meta[str(col)] = StrVector([str(x) for x in v.astype(str)])
    keys = list(obsm_keys) if obsm_keys is not None else [
        k for k in adata.obsm.keys() if np.asarray(adata.obsm[k]).ndim == 2
    ]
    reds = {}
    for k in keys:
        emb = np.asarray(adata.obsm[k], dtype=np.float64)
        reds[k[2:] if k.startswith("X_") else k] = ListVector(
            {"x": FloatVector(emb.ravel(order="F").tolist()), "dims": IntVector(list(emb.shape))}
        )
    data = dgc(sp.csc_matrix(adata.X, dtype=np.float64)) if use_layer else ro.NULL
    ro.r(
        r"""
        function(counts, data, genes, cells, meta, reds, assay, path) {
          mk <- function(l) {
            m <- new("dgCMatrix", i = as.integer(l$i), p = as.integer(l$p), x = as.numeric(l$x),
                     Dim = as.integer(l$dims))
            dimnames(m) <- list(genes, cells)
            m
          }
          md <- as.data.frame(meta, stringsAsFactors = FALSE, optional = TRUE)
          if (ncol(md) == 0) md <- NULL else rownames(md) <- cells
          obj <- SeuratObject::CreateSeuratObject(counts = mk(counts), assay = assay, meta.data = md,
                                                  min.cells = 0, min.features = 0)
          if (!is.null(data)) obj <- SeuratObject::SetAssayData(obj, slot = "data", new.data = mk(data))
          for (nm in names(reds)) {
            emb <- matrix(reds[[nm]]$x, nrow = reds[[nm]]$dims[1])
            key <- paste0(gsub("[^A-Za-z0-9]", "", toupper(nm)), "_")
            dimnames(emb) <- list(cells, paste0(key, seq_len(ncol(emb))))
            obj[[nm]] <- SeuratObject::CreateDimReducObject(embeddings = emb, key = key, assay = assay)
          }
          saveRDS(obj, path)
          invisible(NULL)
        }
        """
    )(dgc(counts), data, StrVector([str(g) for g in adata.var_names]), StrVector([str(c) for c in adata.obs_names]),
      ListVector(meta), ListVector(reds), assay, str(path))
    return path
