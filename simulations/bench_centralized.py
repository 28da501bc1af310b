"""Centralised benchmark: methods x label rates x seeds through ``simulations.centralized.train``.

``python -m simulations.bench_centralized [--out benchmarks/centralized] [--seeds 0 1 2] [--num-threads 1]``
``python -m simulations.bench_centralized --out DIR --model reference --utd-budget reference --usc-seeds
--methods cosmo --override device=cuda`` (the paper's model and epochs on a GPU)

Each cell writes its own run folder (``<out>/runs/<dataset>/<method>/lr<r>/seed<s>``); a cell
whose ``results.json`` exists is read back, not recomputed, so the script can be stopped
and restarted. After every cell ``<out>/summary.json`` and ``<out>/table.md`` are rewritten
(mean +- std over seeds of last-epoch accuracy and macro-F1; best-epoch accuracy, which
selects on the test set, in its own column; wall time).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir

from fedhar.train.checkpoint import atomic_write_text
from simulations.centralized import CONFIG_DIR, RESULTS_FILE, train
from simulations.grid import mean_std

logger = logging.getLogger(__name__)

PERCENT = 100.0


@dataclass(frozen=True)
class Cell:
    """One benchmark run: dataset, method (plus modality), label rate, seed and budget."""

    dataset: str
    method: str
    label_rate: float
    seed: int
    budget: str
    modality: str | None = None

    @property
    def label(self) -> str:
        """Method label as in the results (``supervised-skeleton``)."""
        return f"{self.method}-{self.modality}" if self.modality else self.method

    def overrides(self, run_dir: Path, model: str) -> list[str]:
        """Hydra overrides of this cell."""
        out = [f"dataset={self.dataset}", f"method={self.method}", f"label_rate={self.label_rate:g}",
               f"seed={self.seed}", f"budget={self.budget}", f"model={model}", f"run_dir={run_dir}"]
        if self.modality:
            out.append(f"method.modality={self.modality}")
        return out


UTD_METHODS: tuple[tuple[str, str | None], ...] = (
    ("cosmo", None), ("cmc", None), ("deepsense", None), ("attnsense", None),
    ("supervised", "skeleton"), ("supervised", "inertial"), ("classical", None), ("classical-lr", None),
)
USC_METHODS: tuple[tuple[str, str | None], ...] = (
    ("cosmo", None), ("cmc", None), ("deepsense", None), ("attnsense", None),
    ("supervised", "acc"), ("supervised", "gyro"), ("cpc", None), ("classical", None), ("classical-lr", None),
)


def build_grid(
    seeds: Sequence[int],
    usc_seeds: Sequence[int],
    utd_budget: str = "cpu-utd",
    usc_budget: str = "cpu-usc",
    methods: Sequence[str] | None = None,
    utd_rates: Sequence[float] = (5, 10),
    usc_rates: Sequence[float] = (1,),
) -> list[Cell]:
    """UTD-MHAD at ``utd_rates`` (5 % and 10 %) for every seed, USC-HAD at ``usc_rates`` (1 %) for ``usc_seeds``.

    Ordered so that every method has a first seed early: UTD seeds 0 and 1, then USC, then
    the remaining UTD seeds. ``methods`` keeps only cells whose label (``cosmo``,
    ``supervised-skeleton``, ...) it names; the budgets are configs/budget/<name>.yaml.
    """
    def keep(method: str, modality: str | None) -> bool:
        return methods is None or (f"{method}-{modality}" if modality else method) in methods

    def utd(seed: int) -> list[Cell]:
        return [Cell("utd-mhad", m, rate, seed, utd_budget, mod) for rate in utd_rates for m, mod in UTD_METHODS
                if keep(m, mod)]

    def usc(seed: int) -> list[Cell]:
        return [Cell("usc-had", m, rate, seed, usc_budget, mod) for rate in usc_rates for m, mod in USC_METHODS
                if keep(m, mod)]

    early, late = list(seeds[:2]), list(seeds[2:])
    return ([c for s in early for c in utd(s)] + [c for s in usc_seeds for c in usc(s)]
            + [c for s in late for c in utd(s)])


def run_cell(cell: Cell, out: Path, model: str, extra: Sequence[str]) -> dict[str, Any]:
    """Results of ``cell``: read back if its run folder is complete, else trained now."""
    run_dir = out / "runs" / cell.dataset / cell.label / f"lr{cell.label_rate:g}" / f"seed{cell.seed}"
    done = run_dir / RESULTS_FILE
    if done.is_file():
        return json.loads(done.read_text())
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*cell.overrides(run_dir, model), *extra])
    logger.info("running %s", cell)
    return train(cfg)


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and std over seeds per (dataset, label rate, method)."""
    groups: dict[tuple[str, float, str], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["dataset"], r["label_rate"], r["method"]), []).append(r)
    rows = []
    for (dataset, rate, method), rs in groups.items():
        def stats(key: str, rs: list[dict[str, Any]] = rs) -> tuple[float, float]:
            return mean_std(PERCENT * r[key] for r in rs)

        rows.append({"dataset": dataset, "label_rate": rate, "method": method, "seeds": sorted(r["seed"] for r in rs),
                     "accuracy": stats("accuracy"), "macro_f1": stats("macro_f1"),
                     "best_epoch_accuracy": stats("best_epoch_accuracy"),
                     "wall_time_s": statistics.fmean(r["wall_time_s"]["run"] for r in rs)})
    return sorted(rows, key=lambda r: (r["dataset"], r["label_rate"], r["method"]))


def to_markdown(rows: list[dict[str, Any]]) -> str:
    """The summary as a markdown table."""
    lines = [("| dataset | label rate % | method | seeds | accuracy % (last epoch) | macro-F1 % (last epoch) "
              "| best-epoch accuracy % (selects on test) | wall time / run (s) |"),
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        acc, f1, best = r["accuracy"], r["macro_f1"], r["best_epoch_accuracy"]
        lines.append(f"| {r['dataset']} | {r['label_rate']:g} | {r['method']} | {len(r['seeds'])} "
                     f"| {acc[0]:.1f} ± {acc[1]:.1f} | {f1[0]:.1f} ± {f1[1]:.1f} | {best[0]:.1f} ± {best[1]:.1f} "
                     f"| {r['wall_time_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    """Run (or resume) the grid and write the summary after every cell."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/centralized"))
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--usc-seeds", type=int, nargs="*", default=[0])
    parser.add_argument("--model", default="compact", help="configs/model/<name>.yaml")
    parser.add_argument("--utd-budget", default="cpu-utd", help="configs/budget/<name>.yaml of the UTD-MHAD cells")
    parser.add_argument("--usc-budget", default="cpu-usc", help="configs/budget/<name>.yaml of the USC-HAD cells")
    parser.add_argument("--utd-rates", type=float, nargs="*", default=[5, 10], help="UTD-MHAD label rates (%%)")
    parser.add_argument("--usc-rates", type=float, nargs="*", default=[1], help="USC-HAD label rates (%%)")
    parser.add_argument("--methods", nargs="+", default=None,
                        help="only these method labels (cosmo, cmc, supervised-skeleton, ...; default: all)")
    parser.add_argument("--num-threads", type=int, default=1,
                        help="torch threads per run (1 avoids oversubscription on a shared CPU)")
    parser.add_argument("--override", action="append", default=[], help="extra Hydra override (repeatable)")
    parser.add_argument("--summarize-only", action="store_true",
                        help="only rebuild summary.json and table.md from every finished run folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.summarize_only:
        finished = [json.loads(p.read_text()) for p in sorted((args.out / "runs").glob(f"**/{RESULTS_FILE}"))]
        write_summary(finished, args.out, args.model)
        return
    results: list[dict[str, Any]] = []
    for cell in build_grid(args.seeds, args.usc_seeds, args.utd_budget, args.usc_budget, args.methods,
                           args.utd_rates, args.usc_rates):
        try:
            results.append(run_cell(cell, args.out, args.model, [f"num_threads={args.num_threads}", *args.override]))
        except Exception:  # one failed cell must not stop the grid
            logger.exception("cell %s failed", cell)
            continue
        write_summary(results, args.out, args.model)


def write_summary(results: list[dict[str, Any]], out: Path, model: str) -> None:
    """Write ``summary.json`` and ``table.md`` of ``results`` under ``out``."""
    rows = summarize(results)
    atomic_write_text(out / "summary.json", json.dumps({"rows": rows, "model": model}, indent=2))
    atomic_write_text(out / "table.md", to_markdown(rows))


if __name__ == "__main__":
    main()
