"""Exact kNN for small searches: faiss ``IndexFlatL2`` (via ``scvi_ext.neighbors.knn``) vs the ``"blas"`` backend.

Process-CPU milliseconds per search (median of ``--repeats`` timed loops, one thread), on Gaussian 30-d points
(the PCA width ``integrate_ot`` works on), self-searches with the ``k`` ``integrate_ot`` uses (15 for the density
weights, 30 for the candidate / evaluation kNN), and the fraction of neighbour indices that agree. This is the
measurement behind ``BLAS_KNN_MIN_DATA`` / ``BLAS_KNN_MAX_DATA`` in ``scvi_ext.scbiot._constants``.

With ``--datasets``, also an interleaved A/B of one forced ``integrate_ot`` call (``--timing-iters`` iterations,
no early stop, every candidate accepted, ``prealign='none'``) with the exact path on (the default rule) and off
(``BLAS_KNN_MAX_DATA = 0``: faiss everywhere), alternating call by call in one process: process-CPU ms of the
call, of the ``_knn`` searches and of the k-means (medians). The two arms follow slightly different trajectories
(neighbour near-ties), so stage times other than kNN can differ too.

Usage::

    python benchmarks/scbiot/knn_exact.py --datasets cider_pancreas_baron cellbench_sc_mixology \
        pbmc68k_reduced_counts --out benchmarks/results/scbiot/knn_exact
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402


def _cpu_ms(f, loops: int, repeats: int) -> float:
    f()
    out = []
    for _ in range(repeats):
        t = time.process_time()
        for _ in range(loops):
            f()
        out.append((time.process_time() - t) / loops * 1e3)
    return float(np.median(out))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", type=int, default=[30, 64, 128, 250, 350, 500, 700, 1000, 2000])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--datasets", nargs="*", default=[])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[3] / "shared" / "data"))
    p.add_argument("--timing-iters", type=int, default=5)
    p.add_argument("--ab-repeats", type=int, default=7)
    p.add_argument("--out", default="benchmarks/results/scbiot/knn_exact")
    args = p.parse_args()

    import faiss

    faiss.omp_set_num_threads(1)
    from scvi_ext.neighbors import knn
    from scvi_ext.neighbors._blas import blas_knn as exact_knn
    from scvi_ext.scbiot._constants import BLAS_KNN_MAX_DATA as EXACT_KNN_MAX_DATA
    from scvi_ext.scbiot._constants import BLAS_KNN_MIN_DATA as EXACT_KNN_MIN_DATA

    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    rng = np.random.default_rng(0)
    rows = []
    for n in args.sizes:
        X = rng.standard_normal((n, 30)).astype(np.float32)
        for k in (15, 30):
            if k >= n:
                continue
            loops = max(1, 20_000 // n)
            t_f = _cpu_ms(lambda X=X, k=k: knn(X, k=k, backend="faiss"), loops, args.repeats)
            t_e = _cpu_ms(lambda X=X, k=k: exact_knn(X, None, k), loops, args.repeats)
            same = float((knn(X, k=k, backend="faiss")[0] == exact_knn(X, None, k)[0]).mean())
            rows.append(
                {"n": n, "k": k, "faiss_ms": t_f, "exact_ms": t_e, "speedup": t_f / t_e, "same_idx": same}
            )
            print(rows[-1], flush=True)
    ab = {name: _integrate_ab(name, args) for name in args.datasets}
    res = {
        "uptime_start": uptime,
        "uptime_end": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
    }
    res.update({"rows": rows, "ab": ab, "min_data": EXACT_KNN_MIN_DATA, "max_data": EXACT_KNN_MAX_DATA})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2))
    lines = [
        f"`python benchmarks/scbiot/knn_exact.py --repeats {args.repeats}"
        f"{' --datasets ' + ' '.join(args.datasets) if args.datasets else ''} --timing-iters {args.timing_iters} "
        f"--ab-repeats {args.ab_repeats} --out {args.out}`",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, one thread, box shared with other engineers' "
        f"jobs (2-core CPU): start `{res['uptime_start']}`, end `{res['uptime_end']}`.",
        "",
        "Self-search (a point is not its own neighbour) of n Gaussian 30-d points; process-CPU ms per search, "
        f"medians of {args.repeats} timed loops; `same idx` = fraction of identical neighbour indices. "
        f"`integrate_ot` (`knn_backend='auto'`, CPU) uses the exact search for {EXACT_KNN_MIN_DATA} <= n <= "
        f"{EXACT_KNN_MAX_DATA}.",
        "",
        "| n | k | faiss ms | exact ms | faiss / exact | same idx |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']} | {r['k']} | {r['faiss_ms']:.3f} | {r['exact_ms']:.3f} | {r['speedup']:.2f}× | "
            f"{r['same_idx']:.4f} |"
        )
    if ab:
        lines += [
            "",
            f"`integrate_ot`, {args.timing_iters} forced iterations, exact path on vs off, interleaved, medians of "
            f"{args.ab_repeats} calls each (process-CPU ms):",
            "",
            "| dataset | call (exact) | call (faiss) | kNN (exact) | kNN (faiss) | k-means (exact) | k-means (faiss) |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, r in ab.items():
            e, f = r["exact"], r["faiss"]
            lines.append(
                f"| {name} | {e['call_ms']:.1f} | {f['call_ms']:.1f} | {e['knn_ms']:.1f} | {f['knn_ms']:.1f} | "
                f"{e['kmeans_ms']:.1f} | {f['kmeans_ms']:.1f} |"
            )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def _integrate_ab(name: str, args) -> dict:
    import sys

    import anndata as ad
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from compare_reference import DATASETS

    import scvi_ext.scbiot as scb
    from scvi_ext.methods import prepare
    from scvi_ext.scbiot import _constants as consts
    from scvi_ext.scbiot import _ot_refine as mod

    rel, batch_key, _ = DATASETS[name]
    a = prepare(ad.read_h5ad(Path(args.data) / rel), batch_key=batch_key)
    slim = ad.AnnData(obs=a.obs[[batch_key]].copy())
    slim.obsm["X_pca"] = np.asarray(a.obsm["X_pca"], dtype=np.float32)
    acc: dict[str, float] = {}
    originals = {"knn": mod._knn, "kmeans": mod._kmeans}

    def timed(key, f):
        def g(*a, **kw):
            t = time.process_time()
            try:
                return f(*a, **kw)
            finally:
                acc[key] = acc.get(key, 0.0) + time.process_time() - t

        return g

    mod._knn, mod._kmeans = timed("knn", originals["knn"]), timed("kmeans", originals["kmeans"])
    n_it, limit = args.timing_iters, consts.BLAS_KNN_MAX_DATA

    def call() -> float:
        t = time.process_time()
        scb.integrate_ot(
            slim.copy(),
            "X_pca",
            batch_key,
            out_key="X_ours",
            max_iter=n_it,
            patience=n_it + 1,
            tol=-1e9,
            prealign="none",
        )
        return time.process_time() - t

    runs: dict[str, list] = {"exact": [], "faiss": []}
    try:
        call()  # warm-up
        for _ in range(args.ab_repeats):
            for arm, lim in (("exact", limit), ("faiss", 0)):
                consts.BLAS_KNN_MAX_DATA = lim
                acc.clear()
                c = call()
                runs[arm].append((c, acc.get("knn", 0.0), acc.get("kmeans", 0.0)))
    finally:
        consts.BLAS_KNN_MAX_DATA, mod._knn, mod._kmeans = limit, originals["knn"], originals["kmeans"]
    out = {}
    for arm, v in runs.items():
        m = np.median(np.asarray(v), axis=0) * 1e3
        out[arm] = {"call_ms": float(m[0]), "knn_ms": float(m[1]), "kmeans_ms": float(m[2])}
    print(name, out, flush=True)
    return out


if __name__ == "__main__":
    main()
