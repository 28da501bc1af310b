"""The sweep runner: ``python -m simulations.compare experiment=<name>`` or ``dataset=utd-mhad compare_budget=smoke``.

Every benchmark grid of fedhar runs through it: a grid is a compare budget
(configs/compare_budget/) or an experiment (configs/experiment/<name>.yaml: dataset, label
rates, seeds, methods and overrides of one BENCHMARKS.md table).

For each label rate and seed, runs every method of the grid (configs/compare.yaml
``methods``): supervised, classical and contrastive centralised methods through :func:`simulations.centralized_cell.run_cell` (in-process
:func:`simulations.centralized.train`), federated stage 1 with plain FedAvg and with QoM
weighting through :func:`simulations.federated_cell.run_cell` (a real `flwr run` via
``simulations.run_federated``, private FLWR_HOME and ports), each followed by the same
centralised stage 2 of the budget, and the federated stage-2 modes of ``stage2_compare`` from
the same encoders (methods ``fed-qom-<mode>``, read from the one run they share). Then writes, under ``out_dir``:

- ``cells/<method>/lr<r>/seed<s>.json``: one record per cell, written atomically as soon as
  the cell ends (``status`` done or failed with its error). A finished cell is never run
  again; a failed one is retried unless ``retry_failed=false``. Runs live under ``runs/``
  (centralised) and ``federated/runs/`` (federated).
- ``table.md``, ``table.csv``, ``summary.json`` (simulations/report.py) and the plots below,
  rewritten after every cell.
- ``accuracy_vs_label_rate.png``, ``convergence.png``, ``quality_weights_<method>.png``
  (simulations/plots.py).

Examples
--------
``python -m simulations.compare experiment=federated-utd``
``python -m simulations.compare dataset=utd-mhad compare_budget=quick``
``python -m simulations.compare dataset=usc-had compare_budget=quick retry_failed=false``
``python -m simulations.compare compare_budget=smoke out_dir=OUT/cmp 'compare_budget.methods=[cosmo,fed-qom]'``
"""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from simulations import centralized_cell, federated_cell
from simulations.centralized import CONFIG_DIR, METRICS_FILE, RESULTS_FILE
from simulations.grid import DONE, CellKey, CellStore, GridOutcome, run_grid
from simulations.plots import plot_accuracy_vs_label_rate, plot_convergence, plot_quality_weights
from simulations.report import write_report

__all__ = ["CellRunner", "compose_config", "main", "plan", "run"]

logger = logging.getLogger(__name__)

CONFIG_NAME = "compare"
LOG_FILE = "compare.log"
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
CENTRALIZED = "centralized"
FEDERATED = "federated"
CELLS_DIR = "cells"
FEDERATED_DIR = "federated"
ACCURACY_PLOT = "accuracy_vs_label_rate.png"
CONVERGENCE_PLOT = "convergence.png"
WEIGHTS_PLOT = "quality_weights_{method}.png"
TEST_ACCURACY = "test_accuracy"
PROBE_ACCURACY = "probe-accuracy"


def per_dataset(value: Any, dataset: str) -> Any:
    """``value[dataset]`` if ``value`` is a per-dataset mapping, else ``value`` itself."""
    if isinstance(value, Mapping | DictConfig):
        if dataset not in value:
            raise KeyError(f"no entry for dataset {dataset!r} in {list(value)}")
        return value[dataset]
    return value


def methods_of(cfg: DictConfig) -> list[str]:
    """The dataset's methods, filtered by ``compare_budget.methods`` (null: all), in the dataset's order."""
    dataset = str(cfg.dataset.name)
    if dataset not in cfg.datasets:
        raise KeyError(f"dataset {dataset!r} is not configured for comparison (configs/compare.yaml datasets: "
                       f"{list(cfg.datasets)})")
    methods = list(cfg.datasets[dataset].methods)
    chosen = cfg.compare_budget.get("methods")
    if chosen is not None:  # in the budget's order; another dataset's methods (supervised-acc on UTD) drop out
        methods = [m for m in chosen if m in methods or (m in cfg.methods and _explicit(cfg, m))]
    unknown = [m for m in methods if m not in cfg.methods]
    if unknown:
        raise KeyError(f"methods {unknown} have no entry under `methods` in configs/compare.yaml")
    return methods


def _explicit(cfg: DictConfig, method: str) -> bool:
    """A method added only through the budget (not in any dataset's list) is run as asked."""
    return all(method not in d.methods for d in cfg.datasets.values())


def plan(cfg: DictConfig) -> list[CellKey]:
    """The cells of the comparison, seed-major (a partial run still covers every method and rate)."""
    rates = [float(r) for r in per_dataset(cfg.compare_budget.label_rates, str(cfg.dataset.name))]
    methods = methods_of(cfg)
    return [CellKey(m, rate, int(seed)) for seed in cfg.compare_budget.seeds for rate in rates for m in methods]


class CellRunner:
    """Runs one cell of the comparison and returns its normalised record.

    Parameters
    ----------
    cfg
        The composed configs/compare.yaml.
    out_dir
        The comparison's folder.
    """

    def __init__(self, cfg: DictConfig, out_dir: Path) -> None:
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.dataset = str(cfg.dataset.name)
        self.budget = str(per_dataset(cfg.compare_budget.budget, self.dataset))

    def __call__(self, key: CellKey) -> dict[str, Any]:
        """Run ``key`` (or read back its finished run folder) and return the record."""
        spec = self.cfg.methods[key.method]
        if spec.kind == CENTRALIZED:
            return self._centralized(key, spec)
        if spec.kind == FEDERATED:
            return self._federated(key, spec)
        raise ValueError(f"method {key.method}: kind {spec.kind!r} is neither {CENTRALIZED!r} nor {FEDERATED!r}")

    def _centralized(self, key: CellKey, spec: DictConfig) -> dict[str, Any]:
        cell = centralized_cell.Cell(self.dataset, str(spec.method), key.label_rate, key.seed, self.budget,
                                      spec.get("modality"))
        extra = [f"num_threads={self.cfg.num_threads}",
                 *per_dataset(self.cfg.compare_budget.centralized_overrides, self.dataset), *spec.overrides]
        results = centralized_cell.run_cell(cell, self.out_dir, str(self.cfg.model), list(extra))
        run_dir = Path(results["run_dir"])
        return {"kind": CENTRALIZED, "accuracy": results["accuracy"], "macro_f1": results["macro_f1"],
                "best_epoch_accuracy": results.get("best_epoch_accuracy"),
                "run_wall_s": results.get("wall_time_s", {}).get("run"), "source": str(run_dir / RESULTS_FILE),
                "curve": centralized_curve(run_dir / METRICS_FILE)}

    def _federated(self, key: CellKey, spec: DictConfig) -> dict[str, Any]:
        cell = federated_cell.Cell(key.label_rate, key.seed, str(spec.weighting))
        # The centralised stage 2 of the budget (the same as the centralised cells'), plus the
        # federated stage-2 modes of `stage2_compare` from the same encoders. Every federated
        # method of a weighting shares one `flwr run` per (label rate, seed): its run folder.
        compare = [str(m) for m in self.cfg.stage2_compare]
        extra = " ".join([f"dataset={self.dataset}", f"model={self.cfg.model}",
                          f"federation.stage2_compare=[{','.join(compare)}]",
                          *per_dataset(self.cfg.compare_budget.federated_overrides, self.dataset),
                          *spec.overrides])
        out = self.out_dir / FEDERATED_DIR / self.dataset
        nodes = int(self.cfg.datasets[self.dataset].nodes)
        local_epochs = int(per_dataset(self.cfg.compare_budget.local_epochs, self.dataset))
        results = self._run_federated(cell, out, local_epochs, nodes, extra)
        stage1 = results.get("stage1", {})
        record = {"kind": FEDERATED, "accuracy": results["final"]["accuracy"],
                  "macro_f1": results["final"]["macro_f1"], "best_epoch_accuracy": None,
                  "run_wall_s": results.get("wall_time_s"), "source": str(out / "runs" / cell.folder / RESULTS_FILE),
                  "bytes_per_client_round": (stage1.get("bytes_down_per_client_round", 0.0)
                                             + stage1.get("bytes_up_per_client_round", 0.0)),
                  "round_wall_s": stage1.get("round_wall_s", []),
                  "curve": federated_curve(stage1), "weights": client_weights(stage1)}
        mode = spec.get("stage2")
        if mode is None:
            return record
        stage2 = results.get("stage2_compare", {}).get(str(mode))
        if stage2 is None:
            raise ValueError(f"method {key.method}: stage-2 mode {mode!r} did not run in {record['source']} "
                             f"(stage2_compare of this sweep: {compare})")
        rounds = stage2.get("round_wall_s", [])
        # The stage-1 curve and weights are the shared run's: drawn once, for the method without a mode.
        return {**record, "accuracy": stage2["final"]["accuracy"], "macro_f1": stage2["final"]["macro_f1"],
                "bytes_per_client_round": stage2["bytes_down_per_client_round"] + stage2["bytes_up_per_client_round"],
                "round_wall_s": rounds or [stage2.get("wall_s", 0.0)], "curve": None, "weights": None}

    def _run_federated(self, cell: federated_cell.Cell, out: Path, local_epochs: int, nodes: int,
                       extra: str) -> dict[str, Any]:
        """One `flwr run` (or its finished folder), tried ``federated_retries`` more times after a failure."""
        timeout = float(self.cfg.compare_budget.cell_timeout_s)
        for attempt in range(int(self.cfg.federated_retries)):
            try:
                return federated_cell.run_cell(cell, out, self.budget, local_epochs, nodes, extra, timeout)
            except RuntimeError as err:  # e.g. a lost heartbeat; the error names the cell's log
                logger.warning("attempt %d failed, relaunching: %s", attempt + 1, err)
        return federated_cell.run_cell(cell, out, self.budget, local_epochs, nodes, extra, timeout)


def centralized_curve(metrics_file: Path) -> dict[str, Any]:
    """Test accuracy per evaluated epoch of the last stage that evaluated (stage 2 or supervised)."""
    rows = []
    if metrics_file.is_file():
        rows = [json.loads(line) for line in metrics_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    evaluated = [r for r in rows if TEST_ACCURACY in r]
    stage = evaluated[-1]["stage"] if evaluated else None
    pts = [(int(r["epoch"]), float(r[TEST_ACCURACY])) for r in evaluated if r["stage"] == stage]
    return {"x_label": "epoch", "what": f"test accuracy ({stage})" if stage else "test accuracy",
            "x": [p[0] for p in pts], "y": [p[1] for p in pts]}


def federated_curve(stage1: Mapping[str, Any]) -> dict[str, Any]:
    """Linear-probe test accuracy of the global stage-1 model per round."""
    central = stage1.get("central", {})
    pts = sorted((int(r), float(m[PROBE_ACCURACY])) for r, m in central.items() if PROBE_ACCURACY in m)
    return {"x_label": "round", "what": "stage-1 linear-probe accuracy", "x": [p[0] for p in pts],
            "y": [p[1] for p in pts]}


def client_weights(stage1: Mapping[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """``{round: {modality: {subject: weight}}}`` from stage 1's ``client_weights`` in results.json."""
    prefix = "subject-"
    return {str(rnd): {group: {c.removeprefix(prefix): float(w) for c, w in clients.items()}
                       for group, clients in groups.items()}
            for rnd, groups in stage1.get("client_weights", {}).items()}


def _labels(cfg: DictConfig) -> dict[str, str]:
    return {name: str(spec.get("label", name)) for name, spec in cfg.methods.items()}


def load_reference(name: str) -> dict[str, Any] | None:
    """configs/reference_results/<name>.yaml as a plain dict, or ``None`` (with a warning) if absent."""
    path = Path(CONFIG_DIR) / "reference_results" / f"{name}.yaml"
    if not path.is_file():
        logger.warning("no reference results %s: plots without the paper's markers", path)
        return None
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)  # type: ignore[return-value]


def _header(cfg: DictConfig, records: Sequence[Mapping[str, Any]]) -> str:
    total = sum(float(r.get("cell_wall_s") or 0.0) for r in records)
    return (f"Comparison on {cfg.dataset.name}, budget `{cfg.compare_budget.name}` "
            f"(epochs: configs/budget/{per_dataset(cfg.compare_budget.budget, str(cfg.dataset.name))}.yaml, "
            f"federated local epochs {per_dataset(cfg.compare_budget.local_epochs, str(cfg.dataset.name))}), model `{cfg.model}`. "
            f"Machine: {platform.machine()}, {os.cpu_count()} CPU(s), {platform.platform()}. "
            f"Sum of cell wall times: {total / 60:.1f} min. Accuracy and macro-F1 at the last epoch on the "
            f"test subjects, mean ± std over finished seeds; best-epoch accuracy selects on the test set "
            f"(the paper's metric; n/a for federated cells, whose stage 2 reports only its last epoch).")


def write_outputs(cfg: DictConfig, out_dir: Path, records: Sequence[Mapping[str, Any]]) -> list[Path]:
    """Write the tables and the plots of ``records``; return the plot paths."""
    order = methods_of(cfg)
    labels = _labels(cfg)
    rows = write_report(records, out_dir, order, labels, header=_header(cfg, records))
    reference = load_reference(str(cfg.reference))
    plots = [plot_accuracy_vs_label_rate(rows, reference, out_dir / ACCURACY_PLOT,
                                         title=f"{cfg.dataset.name}: accuracy vs label rate ({cfg.compare_budget.name})"),
             plot_convergence(records, out_dir / CONVERGENCE_PLOT, labels, title=f"{cfg.dataset.name}: convergence")]
    for method in order:
        done = sorted((r for r in records if r["method"] == method and r.get("status") == DONE and r.get("weights")),
                      key=lambda r: (r["label_rate"], r["seed"]))
        if done:
            first = done[0]
            plots.append(plot_quality_weights(
                first["weights"], out_dir / WEIGHTS_PLOT.format(method=method),
                title=f"{labels.get(method, method)}: label rate {first['label_rate']:g} %, seed {first['seed']}"))
    return plots


def run(cfg: DictConfig, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the comparison of ``cfg``; write tables and plots.

    Parameters
    ----------
    cfg
        The composed configs/compare.yaml.
    progress
        Show a tqdm bar over the cells.

    Returns
    -------
    dict
        ``ran``, ``skipped``, ``failed`` (cell names), ``rows`` (table rows), ``plots``
        (paths) and ``out_dir``.
    """
    out_dir = Path(str(cfg.out_dir)).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    cells = plan(cfg)
    store = CellStore(out_dir / CELLS_DIR)
    logger.info("comparison %s / %s: %d cells -> %s", cfg.dataset.name, cfg.compare_budget.name, len(cells), out_dir)
    started = time.perf_counter()

    def rewrite_outputs(outcome: GridOutcome) -> None:  # a stopped comparison keeps its tables and plots
        write_outputs(cfg, out_dir, [outcome.records[k] for k in cells if k in outcome.records])

    outcome = run_grid(cells, CellRunner(cfg, out_dir), store, retry_failed=bool(cfg.retry_failed),
                       after_cell=rewrite_outputs, progress=progress)
    records = [outcome.records[k] for k in cells if k in outcome.records]
    plots = write_outputs(cfg, out_dir, records)
    logger.info("%d cells run, %d skipped (finished before), %d failed, %.0f s; table %s", len(outcome.ran),
                len(outcome.skipped), len(outcome.failed), time.perf_counter() - started, out_dir / "table.md")
    for key in outcome.failed:
        logger.error("cell %s failed: %s", key.name, outcome.records[key].get("error"))
    return {"ran": [k.name for k in outcome.ran], "skipped": [k.name for k in outcome.skipped],
            "failed": [k.name for k in outcome.failed], "out_dir": str(out_dir),
            "plots": [str(p) for p in plots], "rows": json.loads((out_dir / "summary.json").read_text())["rows"]}


def compose_config(overrides: Sequence[str]) -> DictConfig:
    """Compose configs/compare.yaml with Hydra command-line ``overrides``."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(CONFIG_NAME, overrides=list(overrides))


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (Hydra override syntax); exit status 1 if a cell failed and ``fail_on_error``.

    Not ``@hydra.main``: the centralised cells compose configs/config.yaml themselves
    (simulations.centralized_cell.run_cell), which a running Hydra app forbids.
    """
    cfg = compose_config(sys.argv[1:] if argv is None else argv)
    out_dir = Path(str(cfg.out_dir)).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT,
                        handlers=[logging.StreamHandler(), logging.FileHandler(out_dir / LOG_FILE)])
    summary = run(cfg)
    print(f"{len(summary['ran'])} cells run, {len(summary['skipped'])} skipped, {len(summary['failed'])} failed; "
          f"table {summary['out_dir']}/table.md")
    return 1 if summary["failed"] and cfg.fail_on_error else 0


if __name__ == "__main__":
    sys.exit(main())
