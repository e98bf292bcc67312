"""Run the reference ``uniport.Run`` on inputs written by the benchmark scripts (called in ITS interpreter).

Only calls the reference's public API: ``uniport.Run``. Usage (done by side_by_side.py / deconvolution.py):
``REFERENCE_PYTHON reference_driver.py INPUT_DIR OUTPUT.npz ITERATIONS SEED [save_ot] [profile]``.
INPUT_DIR holds ``adata_cm.h5ad`` and optionally ``specific_0.h5ad``, ``specific_1.h5ad``, ... .
"""

import cProfile
import io
import os
import pstats
import sys
import tempfile
import time

import anndata
import numpy as np
import torch

torch.set_num_threads(1)


def main() -> None:
    in_dir, out_path, iterations, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    flags = set(sys.argv[5:])
    import uniport as up

    cm = anndata.read_h5ad(os.path.join(in_dir, "adata_cm.h5ad"))
    specific = []
    i = 0
    while os.path.exists(os.path.join(in_dir, f"specific_{i}.h5ad")):
        specific.append(anndata.read_h5ad(os.path.join(in_dir, f"specific_{i}.h5ad")))
        i += 1
    outdir = tempfile.mkdtemp(prefix="uniport_ref_")
    kwargs = dict(adata_cm=cm, iteration=iterations, seed=seed, outdir=outdir, save_OT="save_ot" in flags)
    if specific:
        kwargs["adatas"] = specific
    kwargs["use_rep"] = ["X"] * (
        len(specific) or cm.obs["source"].nunique()
    )  # default covers only 2 datasets
    # warm-up (untimed): one epoch, so lazy imports inside Run are not counted
    up.Run(**{**kwargs, "iteration": 1, "save_OT": False, "outdir": tempfile.mkdtemp(prefix="uniport_warm_")})
    prof = cProfile.Profile() if "profile" in flags else None
    t0, c0 = time.perf_counter(), time.process_time()
    if prof is not None:
        prof.enable()
    res = up.Run(**kwargs)
    if prof is not None:
        prof.disable()
    seconds = time.perf_counter() - t0
    out = {"seconds": np.array(seconds), "cpu_seconds": np.array(time.process_time() - c0)}
    if isinstance(res, tuple):
        res, tran = res
        for q, plan in tran.items():
            out[f"plan_{q}"] = np.asarray(plan, dtype=np.float32)
    out["latent"] = np.asarray(res.obsm["latent"], dtype=np.float32)
    out["obs_names"] = np.array(res.obs_names.astype(str).tolist(), dtype="U")
    if prof is not None:
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(15)
        out["profile"] = np.array(buf.getvalue())
    np.savez(out_path, **out)


if __name__ == "__main__":
    main()
