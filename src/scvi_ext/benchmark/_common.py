"""Helpers shared by the benchmark runner and the method benchmark scripts: reference table, timing,
provenance, markdown output, so every ``results/*.json`` and ``results/*.md`` has the same layout.

The scripts in ``benchmarks/`` import these through ``benchmarks/_common.py``.
"""

from __future__ import annotations

import os
import platform
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

#: The source checkout this (editable) install lives in: src/scvi_ext/benchmark/ -> repository root. For a
#: regular install it is not a checkout; then paths are taken relative to the working directory.
_CHECKOUT = Path(__file__).resolve().parents[3]
REPO_ROOT = _CHECKOUT if (_CHECKOUT / "benchmarks").is_dir() else Path.cwd()
BENCH_DIR = REPO_ROOT / "benchmarks"
RESULTS_DIR = BENCH_DIR / "results"
#: ``../shared/reference-results.md`` beside the clone (the table the results are compared with).
DEFAULT_REFERENCE = REPO_ROOT.parent / "shared" / "reference-results.md"

#: Distributions whose versions are recorded with every result.
VERSIONED_PACKAGES = (
    "scvi-ext",
    "scvi-tools",
    "torch",
    "lightning",
    "scib-metrics",
    "jax",
    "scanpy",
    "anndata",
    "harmonypy",
    "pynndescent",
    "faiss-cpu",
    "numpy",
    "scikit-learn",
)

#: (markdown header, scib_benchmark column) for the main table: the layout of reference-results.md.
MAIN_COLUMNS = (
    ("Total", "Total"),
    ("Batch", "Batch"),
    ("Bio", "Bio"),
    ("iLISI", "iLISI"),
    ("kBET", "KBET"),
    ("KMeans NMI", "KMeans NMI"),
    ("KMeans ARI", "KMeans ARI"),
    ("Silhouette label", "Silhouette label"),
)
#: The other metrics of scib-metrics' default set, shown in a second table.
OTHER_COLUMNS = ("Isolated labels", "cLISI", "BRAS", "Graph connectivity", "PCR comparison")
CPU_COLUMN, WALL_COLUMN = "CPU s", "wall s"


# --------------------------------------------------------------------------------------------------------
# Reference table
# --------------------------------------------------------------------------------------------------------
_SECTION = re.compile(r"^##\s+(\S+)")


def load_reference(path: Path | str = DEFAULT_REFERENCE) -> dict[str, dict[str, dict[str, float]]]:
    """Parse the markdown tables of ``reference-results.md``.

    Parameters
    ----------
    path
        The markdown file: ``## <dataset> (...)`` sections, each with a ``| method | Total | ... |`` table.

    Returns
    -------
    dict
        ``{dataset: {method: {column: value}}}`` with the columns named as in the markdown (``"kBET"``,
        ``"CPU s"``, ...); an empty dict when the file does not exist.

    Examples
    --------
    >>> ref = load_reference()  # doctest: +SKIP
    >>> ref["pbmc68k_reduced_counts"]["pca"]["Total"]  # doctest: +SKIP
    0.628
    """
    path = Path(path)
    if not path.is_file():
        return {}
    tables: dict[str, dict[str, dict[str, float]]] = {}
    dataset, header = None, None
    for line in path.read_text().splitlines():
        match = _SECTION.match(line)
        if match:
            dataset, header = match.group(1), None
            continue
        if dataset is None or not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
            continue
        if set("".join(cells)) <= set("-: "):
            continue
        row = {}
        for name, cell in zip(header[1:], cells[1:], strict=False):
            try:
                row[name] = float(cell)
            except ValueError:
                continue
        tables.setdefault(dataset, {})[cells[0]] = row
    return tables


# --------------------------------------------------------------------------------------------------------
# Timing and provenance
# --------------------------------------------------------------------------------------------------------
@dataclass
class Timing:
    """Wall-clock and CPU seconds of a block (CPU = this process + finished child processes)."""

    wall: float = 0.0
    cpu: float = 0.0


def _cpu_now() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@contextmanager
def timed() -> Iterator[Timing]:
    """Time a block: ``with timed() as t: ...`` then ``t.wall``, ``t.cpu`` (seconds).

    Examples
    --------
    >>> with timed() as t:
    ...     _ = sum(range(1000))
    >>> t.wall >= 0 and t.cpu >= 0
    True
    """
    t = Timing()
    wall0, cpu0 = time.perf_counter(), _cpu_now()
    try:
        yield t
    finally:
        t.wall, t.cpu = time.perf_counter() - wall0, _cpu_now() - cpu0


def package_versions(names: Sequence[str] = VERSIONED_PACKAGES) -> dict[str, str | None]:
    """Return ``{distribution: version}`` (``None`` when not installed) plus the Python version.

    Examples
    --------
    >>> "python" in package_versions(["numpy"])
    True
    """
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def describe_machine() -> dict[str, Any]:
    """CPU model, core count, memory, OS and GPU (if torch sees one); no host name.

    Examples
    --------
    >>> describe_machine()["cpu_count"] >= 1
    True
    """
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_model": platform.processor() or None,
        "memory_gb": None,
        "gpu": None,
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gb"] = round(int(line.split()[1]) / 2**20, 1)
                break
    except OSError:  # not Linux
        pass
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    return info


def git_revision(repo: Path = REPO_ROOT) -> str | None:
    """Commit hash of ``repo`` (with ``-dirty`` when the tree has changes), or ``None`` outside git.

    Examples
    --------
    >>> git_revision() is None or isinstance(git_revision(), str)
    True
    """
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{rev}-dirty" if dirty else rev


def utc_now() -> str:
    """Current UTC time, ISO 8601 to the second.

    Examples
    --------
    >>> utc_now().endswith("+00:00")
    True
    """
    return datetime.now(UTC).isoformat(timespec="seconds")


def command_line(script: Path | str, args: Sequence[str], python: str = ".venv/bin/python") -> str:
    """A copy-pasteable command, run from the repository root, with absolute paths made relative to it.

    Examples
    --------
    >>> command_line(BENCH_DIR / "run.py", ["--seed", "0"])
    '.venv/bin/python benchmarks/run.py --seed 0'
    """

    def rel(a: str) -> str:
        p = Path(a)
        if p.is_absolute():
            return os.path.relpath(p, REPO_ROOT)
        return a

    return " ".join(shlex.quote(rel(a)) for a in [python, str(script), *args])


# --------------------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------------------
def fmt(value: Any, digits: int = 3, signed: bool = False) -> str:
    """Format a table cell: ``""`` for missing/NaN, fixed decimals otherwise.

    Examples
    --------
    >>> fmt(0.12345), fmt(None), fmt(-0.01, signed=True), fmt(81.6, 0)
    ('0.123', '', '-0.010', '82')
    """
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return ""
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Render a GitHub markdown table.

    Examples
    --------
    >>> print(markdown_table(["a", "b"], [["1", "2"]]))
    | a | b |
    |---|---|
    | 1 | 2 |
    """
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------
# Hook for reference implementations run in their own Python environment
# --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReferenceRun:
    """What a reference-implementation runner gets (see ``REFERENCE_RUNNERS``).

    Attributes
    ----------
    method
        Method name (``"piano"``, ``"sccraft"``, ...); the result row is ``"<method>_ref"``.
    python
        Interpreter of the environment where the reference package is installed (``--reference-python``).
    prepared_h5ad
        The prepared AnnData written to disk (counts in ``layers['counts']``, log1p ``X``, ``obsm['X_pca']``).
    batch_key, labels_key, seed, max_epochs
        As given to ``run.py``.
    workdir
        Scratch folder for the runner's own files.
    """

    method: str
    python: Path
    prepared_h5ad: Path
    batch_key: str
    labels_key: str
    seed: int
    max_epochs: int | None
    workdir: Path


#: ``{method: runner(ReferenceRun) -> embedding (cells x dims)}``. Method issues register a runner from a
#: module ``benchmarks/reference/<method>.py`` (imported by ``run.py`` when ``--reference-python`` is given),
#: typically ``subprocess.run([run.python, script, ...])`` writing an ``.npy`` embedding that it loads back.
REFERENCE_RUNNERS: dict[str, Callable[[ReferenceRun], np.ndarray]] = {}


def register_reference(method: str) -> Callable:
    """Decorator registering a reference-implementation runner for ``method``.

    Examples
    --------
    >>> @register_reference("toy")
    ... def run_toy(run: ReferenceRun):
    ...     return np.zeros((3, 2))
    >>> "toy" in REFERENCE_RUNNERS
    True
    >>> _ = REFERENCE_RUNNERS.pop("toy")
    """

    def deco(fn: Callable[[ReferenceRun], np.ndarray]) -> Callable[[ReferenceRun], np.ndarray]:
        REFERENCE_RUNNERS[method] = fn
        return fn

    return deco


def jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays, paths and NaN into JSON-friendly values (NaN -> ``None``).

    Examples
    --------
    >>> jsonable({"a": np.float32(0.5), "b": [np.nan, Path("x")]})
    {'a': 0.5, 'b': [None, 'x']}
    """
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj
