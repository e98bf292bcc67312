"""Worker of kang_speed.R: one timed integrate_anndata call (the Python core) on the R side's features.

Usage: python kang_speed.py <kang h5ad> <features.txt> <epochs>
"""

import sys
import time

import anndata as ad
import torch

from scvi_ext.interop import environment_info, integrate_anndata

h5ad, features_file, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
torch.set_num_threads(1)
adata = ad.read_h5ad(h5ad)
features = [line.strip() for line in open(features_file) if line.strip()]
adata = adata[:, features].copy()
environment_info()  # imports what scviext_config() imports on the R side (not timed)
t0, c0 = time.time(), time.process_time()
integrate_anndata(adata, "sysvi", "stim", max_epochs=epochs, seed=0, n_threads=1, progress_bar=False)
print(f"RESULT {time.time() - t0:.2f} {time.process_time() - c0:.2f} python")
