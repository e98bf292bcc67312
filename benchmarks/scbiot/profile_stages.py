"""Where the time of one scBIOT part-A call goes: ours vs the v1.0.7 paper code, stage by stage (process CPU).

Both implementations run the same forced schedule as ``compare_reference.py``'s timing run (``max_iter=N``, no
early stop, every candidate accepted; one thread; same PCA input). Every stage function of each implementation
is wrapped by a timer that records its *exclusive* process-CPU time (time spent in nested wrapped stages is
booked to them), so the rows add up to the measured total; "other" is the rest (loop glue, schedules, array
conversions, precompute outside the named stages). Ours runs in this interpreter (after one warm-up call);
v1.0.7 runs in ``--reference-python`` with the ``integrate.py`` of the authors' v1.0.7 tag loaded from
``--v107-source`` (nothing of it is stored here), after one warm-up call too, so both are warm here (the
timing benchmark runs v1.0.7 cold in a fresh process each repeat). Medians over ``--repeats`` calls.

Usage::

    python benchmarks/scbiot/profile_stages.py --reference-python /work/refenv/scbiot/bin/python \
        --v107-source /path/to/scbiot-v1.0.7/src/scbiot/ot/integrate.py --out benchmarks/results/scbiot/profile
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

#: stage -> function names of our module ``scvi_ext.scbiot._ot_refine`` (and ``_kmeans``)
OURS = {
    "k-means (prototypes, sharpen centres)": ["_kmeans"],
    "kNN searches (faiss)": ["_knn", "_nearest"],
    "Eq. 1 density weights (excl. kNN)": ["_density_weights"],
    "prototype bookkeeping (excl. k-means/kNN)": ["_prototypes", "_batch_prototypes"],
    "UOT solve + barycentric images": ["uot_barycentric"],
    "sharpening field (excl. k-means/kNN)": ["_sharpen_field"],
    "kNN smoothing": ["smooth_shift"],
    "step cap + edge guards": ["_edge_guard"],
    "graph strain": ["_strain"],
    "mix / overlap / batch entropy (excl. kNN)": ["_mix", "_overlap", "_batch_entropy"],
    "trustworthiness (final)": ["_trustworthiness"],
}
#: stage -> function names of the v1.0.7 module (same rows)
V107 = {
    "k-means (prototypes, sharpen centres)": ["_minikm_centers"],
    "kNN searches (faiss)": ["_knn_idx", "_knn_graph", "_faiss_knn_search"],
    "Eq. 1 density weights (excl. kNN)": ["_local_knn_density"],
    "prototype bookkeeping (excl. k-means/kNN)": ["_compute_prototypes", "_compute_prototypes_union"],
    "UOT solve + barycentric images": ["_ot_barycentric_gpu", "_ot_barycentric_pot"],
    "sharpening field (excl. k-means/kNN)": ["_cluster_sharpen_field"],
    "kNN smoothing": ["_smooth_by_knn"],
    "step cap + edge guards": ["_cap_step_local", "_guard_edge_stretch_weighted"],
    "graph strain": ["_graph_strain"],
    "mix / overlap / batch entropy (excl. kNN)": ["_neighbor_batch_entropy_per_cell", "_knn_overlap"],
    "trustworthiness (final)": ["_trustworthiness_score"],
}

# Worker: run in either interpreter; only numpy/anndata/torch (+ the implementation under test).
_WORKER = r"""
import json, os, sys, time, importlib.util, functools
import numpy as np, anndata as ad, torch
torch.set_num_threads(1)
try:
    import faiss; faiss.omp_set_num_threads(1)
except ImportError:
    pass
which, h5, batch_key, n_it, repeats, stages = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), json.loads(sys.argv[6])
src = sys.argv[7] if len(sys.argv) > 7 else ""
a = ad.read_h5ad(h5)
if which == "v107":
    spec = importlib.util.spec_from_file_location("scbiot_v107_integrate", src)
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    def call(b):
        mod.integrate_ot(b, obsm_key="X_pca", batch_key=batch_key, out_key="X_ref", use_gpu=False, verbose=False,
                         max_iter=n_it, patience=n_it + 1, tol=-1e9)
else:
    import scvi_ext.scbiot as scb
    from scvi_ext.scbiot import _ot_refine as mod
    def call(b):
        scb.integrate_ot(b, "X_pca", batch_key, out_key="X_ours", max_iter=n_it, patience=n_it + 1, tol=-1e9,
                         prealign="none")
acc, stack = {}, []
def wrap(f, name):
    @functools.wraps(f)
    def g(*args, **kw):
        stack.append(0.0)
        t = time.process_time()
        try:
            return f(*args, **kw)
        finally:
            dt = time.process_time() - t
            inner = stack.pop()
            acc[name] = acc.get(name, 0.0) + dt - inner
            if stack:
                stack[-1] += dt
    return g
for st, names in stages.items():
    for nm in names:
        if hasattr(mod, nm):
            setattr(mod, nm, wrap(getattr(mod, nm), st))
call(a.copy())  # warm-up
rows = []
for _ in range(repeats):
    acc.clear()
    b = a.copy()
    t, c = time.perf_counter(), time.process_time()
    call(b)
    rows.append({"wall_s": time.perf_counter() - t, "cpu_s": time.process_time() - c, "stages": dict(acc)})
print("RESULT " + json.dumps(rows))
"""


def _run(py: str, which: str, h5: str, batch_key: str, args, stages: dict, src: str = "") -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    cmd = [
        py,
        "-c",
        _WORKER,
        which,
        h5,
        batch_key,
        str(args.timing_iters),
        str(args.repeats),
        json.dumps(stages),
    ]
    proc = subprocess.run([*cmd, src] if src else cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{which} failed:\n{proc.stderr[-3000:]}")
    return json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1][7:])


def _summary(rows: list[dict], stages: dict) -> dict:
    med = {st: float(np.median([r["stages"].get(st, 0.0) for r in rows])) for st in stages}
    cpu = float(np.median([r["cpu_s"] for r in rows]))
    med["other (loop glue, precompute, conversions)"] = max(cpu - sum(med.values()), 0.0)
    return {"cpu_s": cpu, "wall_s": float(np.median([r["wall_s"] for r in rows])), "stages": med}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference-python", required=True)
    p.add_argument("--v107-source", required=True, help="path to v1.0.7 src/scbiot/ot/integrate.py")
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[3] / "shared" / "data"))
    p.add_argument(
        "--datasets",
        nargs="+",
        default=["cider_pancreas_baron", "cellbench_sc_mixology", "pbmc68k_reduced_counts"],
    )
    p.add_argument("--timing-iters", type=int, default=5)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default="benchmarks/results/scbiot/profile")
    args = p.parse_args()

    import anndata as ad

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from compare_reference import DATASETS

    from scvi_ext.methods import prepare

    results: dict = {"uptime_start": _uptime(), "timing_iters": args.timing_iters, "repeats": args.repeats}
    for name in args.datasets:
        rel, batch_key, label_key = DATASETS[name]
        a = prepare(ad.read_h5ad(Path(args.data) / rel), batch_key=batch_key)
        slim = ad.AnnData(obs=a.obs[[batch_key]].copy())
        slim.obsm["X_pca"] = np.asarray(a.obsm["X_pca"], dtype=np.float32)
        with tempfile.TemporaryDirectory() as d:
            h5 = os.path.join(d, "in.h5ad")
            slim.write_h5ad(h5)
            ours = _run(sys.executable, "ours", h5, batch_key, args, OURS)
            ref = _run(args.reference_python, "v107", h5, batch_key, args, V107, args.v107_source)
        results[name] = {
            "n_cells": int(slim.n_obs),
            "n_batches": int(slim.obs[batch_key].nunique()),
            "ours": _summary(ours, OURS),
            "v107": _summary(ref, V107),
        }
        print(name, json.dumps(results[name], indent=1), flush=True)
    results["uptime_end"] = _uptime()
    _write(results, args)


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def _write(results: dict, args) -> None:
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2))
    cmd = (
        f"python benchmarks/scbiot/profile_stages.py --reference-python {args.reference_python} "
        f"--v107-source {args.v107_source} --datasets {' '.join(args.datasets)} "
        f"--timing-iters {args.timing_iters} --repeats {args.repeats} --out {args.out}"
    )
    n_it = results["timing_iters"]
    lines = [
        f"`{cmd}`",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Box shared with other engineers' jobs "
        f"(2-core CPU): start `{results['uptime_start']}`, end `{results['uptime_end']}`.",
        "",
        f"One `integrate_ot` call, {n_it} forced iterations (no early stop, every candidate accepted), one thread, "
        "both implementations warm (one warm-up call first), same PCA input. Exclusive process-CPU milliseconds "
        f"per call (medians of {results['repeats']} calls) and per iteration (÷ {n_it}; precompute included). "
        "Host<->device copies: none beyond numpy<->torch views/copies on the CPU (booked to the stage doing them).",
        "",
    ]
    for name, row in results.items():
        if not isinstance(row, dict):
            continue
        o, r = row["ours"], row["v107"]
        lines += [
            f"## {name} ({row['n_cells']} cells, {row['n_batches']} batches)",
            "",
            "| stage | ours ms | ours ms/it | v1.0.7 ms | v1.0.7 ms/it | v1.0.7 / ours |",
            "|---|---|---|---|---|---|",
        ]
        for st in o["stages"]:
            a, b = 1e3 * o["stages"][st], 1e3 * r["stages"].get(st, 0.0)
            ratio = f"{b / a:.1f}×" if a > 0.05 else "–"
            lines.append(f"| {st} | {a:.1f} | {a / n_it:.1f} | {b:.1f} | {b / n_it:.1f} | {ratio} |")
        lines += [
            f"| **total (process CPU)** | **{1e3 * o['cpu_s']:.1f}** | {1e3 * o['cpu_s'] / n_it:.1f} | "
            f"**{1e3 * r['cpu_s']:.1f}** | {1e3 * r['cpu_s'] / n_it:.1f} | **{r['cpu_s'] / o['cpu_s']:.1f}×** |",
            f"| wall | {1e3 * o['wall_s']:.1f} | | {1e3 * r['wall_s']:.1f} | | {r['wall_s'] / o['wall_s']:.1f}× |",
            "",
        ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
