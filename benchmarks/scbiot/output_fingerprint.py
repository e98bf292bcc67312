"""Save (or compare) every ``integrate_ot`` output on compare_reference's datasets: a speed change must not move them.

Runs 3 datasets × seeds × variants (the paper defaults ``prealign='none'``, the real defaults, the ``rna``
preset, ``ot_solver='reference'`` and a forced 5-iteration run) and stores each output embedding plus
``(it, n_iter_run, mix, overlap0, tw)`` in one ``.npz``. ``--compare OLD.npz`` reports the largest absolute
difference per run (0 everywhere = bit-identical). To fingerprint an older tree, run this script with
``PYTHONPATH=<old checkout>/src``. Also prints the total process CPU of the runs (a coarse speed figure).

Usage::

    python benchmarks/scbiot/output_fingerprint.py --save /tmp/new.npz --compare /tmp/old.npz
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[3] / "shared" / "data"))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--save", required=True, help="output .npz")
    p.add_argument("--compare", default=None, help="an earlier .npz to compare with")
    args = p.parse_args()

    import anndata as ad
    import torch

    torch.set_num_threads(1)
    try:
        import faiss

        faiss.omp_set_num_threads(1)
    except ImportError:
        pass
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from compare_reference import DATASETS

    import scvi_ext.scbiot as scb
    from scvi_ext.methods import prepare
    from scvi_ext.scbiot._constants import PRESETS

    variants = {
        "paper_defaults": {"prealign": "none"},
        "defaults_prealign_auto": {},
        "rna_preset": {"prealign": "none", **PRESETS["rna"]},
        "reference_solver": {"prealign": "none", "ot_solver": "reference"},
        "forced_5_iterations": {"prealign": "none", "max_iter": 5, "patience": 6, "tol": -1e9},
    }
    out: dict[str, np.ndarray] = {}
    cpu = 0.0
    print("scvi_ext.scbiot from", scb.__file__)
    for name, (rel, batch_key, _) in DATASETS.items():
        a = prepare(ad.read_h5ad(Path(args.data) / rel), batch_key=batch_key)
        slim = ad.AnnData(obs=a.obs[[batch_key]].copy())
        slim.obsm["X_pca"] = np.asarray(a.obsm["X_pca"], dtype=np.float32)
        for seed in args.seeds:
            for var, kw in variants.items():
                b = slim.copy()
                c = time.process_time()
                m = scb.integrate_ot(b, "X_pca", batch_key, out_key="X_ot", random_state=seed, **kw)
                cpu += time.process_time() - c
                key = f"{name}|s{seed}|{var}"
                out[key] = np.asarray(b.obsm["X_ot"])
                out[key + "|metrics"] = np.array([m["it"], m["n_iter_run"], m["mix"], m["overlap0"], m["tw"]])
    np.savez(args.save, **out)
    print(f"{len(out) // 2} runs, total integrate_ot process CPU {cpu:.2f} s -> {args.save}")
    if args.compare:
        old = np.load(args.compare)
        worst, differing = 0.0, 0
        for key, val in out.items():
            diff = float(np.abs(old[key] - val).max())
            if diff > 0:
                differing += 1
                print(f"  differs: {key} max|diff|={diff:.3g}")
            worst = max(worst, diff)
        print(f"compared {len(out)} arrays with {args.compare}: {differing} differ, max |diff| = {worst:.3g}")


if __name__ == "__main__":
    main()
