"""Benchmark dataset loading: first load into an empty cache vs. a load from the cache.

Usage::

    python -m simulations.bench_data_load --data-dir /path/to/datasets --repeats 5

Each repetition uses a fresh, empty cache folder: the first ``load_dataset`` call reads the
raw files, preprocesses them and writes the cache entry ("cold"); the following calls read
the entry ("cached"). After the first repetition the raw files sit in the OS page cache,
so "cold" measures parsing and preprocessing, not disk reads. Medians are reported.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fedhar.data.config import DatasetConfig
from fedhar.data.loading import load_dataset_with_report

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "configs" / "dataset"
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "data_load.json"
FOLDERS = {"utd-mhad": "UTD-MHAD", "usc-had": "USC-HAD"}


def build_parser() -> argparse.ArgumentParser:
    """Command-line arguments of the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=os.environ.get("FEDHAR_DATA_DIR"),
                        help="folder holding UTD-MHAD/ and USC-HAD/ (default: $FEDHAR_DATA_DIR)")  # fmt: skip
    parser.add_argument("--datasets", nargs="+", choices=sorted(FOLDERS), default=sorted(FOLDERS, reverse=True))
    parser.add_argument("--repeats", type=int, default=5, help="cold loads per dataset (each with an empty cache)")
    parser.add_argument("--cached-loads", type=int, default=3, help="cached loads after each cold load")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON result file (default: {DEFAULT_OUT})")
    return parser


def bench_dataset(name: str, data_dir: Path, repeats: int, cached_loads: int) -> dict[str, Any]:
    """Time ``repeats`` cold loads and ``repeats * cached_loads`` cached loads of one dataset."""
    raw = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
    cold, cached = [], []
    rows = entry_bytes = 0
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="fedhar-bench-") as cache_dir:
            cfg = DatasetConfig.from_mapping({**raw, "root": str(data_dir / FOLDERS[name]), "cache_dir": cache_dir})
            start = time.perf_counter()
            dataset, report = load_dataset_with_report(cfg, progress=False)
            cold.append(time.perf_counter() - start)
            if report.from_cache or report.cache_path is None:
                raise RuntimeError(f"{name}: the first load did not write a cache entry: {report}")
            rows, entry_bytes = len(dataset), Path(report.cache_path).stat().st_size
            for _ in range(cached_loads):
                start = time.perf_counter()
                _, report = load_dataset_with_report(cfg, progress=False)
                cached.append(time.perf_counter() - start)
                if not report.from_cache:
                    raise RuntimeError(f"{name}: a second load did not read the cache")
    return {
        "dataset": name,
        "rows": rows,
        "shapes": {m: list(a.shape[1:]) for m, a in dataset.data.items()},
        "cache_entry_mb": round(entry_bytes / 1e6, 2),
        "cold_s": _summary(cold),
        "cached_s": _summary(cached),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print a table and write the JSON result."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.data_dir is None or not Path(args.data_dir).is_dir():
        print(f"data folder not found: {args.data_dir} (pass --data-dir or set FEDHAR_DATA_DIR)", file=sys.stderr)
        return 2
    if args.repeats < 1 or args.cached_loads < 1:
        print("--repeats and --cached-loads must be >= 1", file=sys.stderr)
        return 2
    results = [bench_dataset(name, Path(args.data_dir), args.repeats, args.cached_loads) for name in args.datasets]
    record = {"benchmark": "data_load", "repeats": args.repeats, "cached_loads": args.cached_loads,
              "machine": _machine(), "results": results}  # fmt: skip
    print(f"{'dataset':<10} {'rows':>6} {'entry MB':>9} {'cold median s':>14} {'cached median s':>16} {'speed-up':>9}")
    for r in results:
        speedup = r["cold_s"]["median"] / r["cached_s"]["median"]
        print(f"{r['dataset']:<10} {r['rows']:>6} {r['cache_entry_mb']:>9.1f} {r['cold_s']['median']:>14.3f} "
              f"{r['cached_s']['median']:>16.3f} {speedup:>8.1f}x")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"written to {args.out}")
    return 0


def _summary(times: list[float]) -> dict[str, float | int]:
    return {"median": round(statistics.median(times), 4), "min": round(min(times), 4),
            "max": round(max(times), 4), "n": len(times)}  # fmt: skip


def _machine() -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                text=True, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "git_commit": commit,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


if __name__ == "__main__":
    sys.exit(main())
