"""Federated benchmark: UTD-MHAD label rates x seeds x stage-1 weighting (QoM / plain FedAvg) via `flwr run`.

``python -m simulations.bench_federated [--out benchmarks/federated] [--seeds 0 1 2] [--label-rates 5 10]``

Every cell is one real `flwr run` (``simulations.run_federated``, its own FLWR_HOME and
SuperLink, stopped afterwards): federated stage 1 with the cell's weighting, then the
centralised stage 2 of the centralised benchmark (``federation.stage2_mode=centralized``,
``federation.centralized_epochs`` = the budget's ``stage2.epochs``, the budget's lr
milestones), so stage-1 variants are compared with stage 2 fixed. QoM cells also run the
federated stage-2 modes from the same encoders (``federation.stage2_compare=[federated,lda,ccvr]``).
Stage 1 gets ``ceil(stage1.epochs / local_epochs)`` rounds of ``local_epochs`` epochs, the
centralised budget's epoch count. A cell whose ``results.json`` exists is read back, so the
script resumes; ``summary.json`` and ``table.md`` are rewritten after every cell.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fedhar.train.checkpoint import atomic_write_text
from simulations.grid import mean_std
from simulations.run_federated import free_port, stop_superlink

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
PERCENT = 100.0
WEIGHTINGS = {"qom": "qom-fedavg", "examples": "fedavg"}
CENTRALIZED_METHODS = ("cosmo", "cmc")
#: Federated stage-2 modes a QoM cell runs from its stage-1 encoders (federation.stage2_compare).
FEDERATED_STAGE2 = {
    "federated": "federated stage 2: FedAvg of the classifier",
    "lda": "federated stage 2: LDA head from class statistics",
    "ccvr": "federated stage 2: CCVR (classifier on virtual features)",
}


@dataclass(frozen=True)
class Cell:
    """One federated run: label rate, seed and stage-1 weighting (``qom`` or ``examples``)."""

    label_rate: float
    seed: int
    weighting: str

    @property
    def folder(self) -> str:
        """Relative run folder of the cell."""
        return f"lr{self.label_rate:g}/{self.weighting}/seed{self.seed}"


def budget_epochs(budget: str) -> tuple[int, int]:
    """``(stage1.epochs, stage2.epochs)`` of configs/budget/<budget>.yaml."""
    cfg = yaml.safe_load((REPO / "configs" / "budget" / f"{budget}.yaml").read_text(encoding="utf-8"))
    return int(cfg["stage1"]["epochs"]), int(cfg["stage2"]["epochs"])


def cell_overrides(cell: Cell, budget: str, local_epochs: int, extra: str) -> str:
    """Hydra overrides (one run-config string) of ``cell``."""
    stage1_epochs, stage2_epochs = budget_epochs(budget)
    items = [f"seed={cell.seed}", f"label_rate={cell.label_rate:g}", f"strategy={WEIGHTINGS[cell.weighting]}",
             f"budget={budget}", f"federation.stage1_rounds={math.ceil(stage1_epochs / local_epochs)}",
             f"federation.stage1_local_epochs={local_epochs}", "federation.stage2_mode=centralized",
             f"federation.centralized_epochs={stage2_epochs}"]
    if cell.weighting == "qom":
        items.append(f"federation.stage2_compare=[{','.join(FEDERATED_STAGE2)}]")
    return " ".join(items + extra.split())


def run_cell(cell: Cell, out: Path, budget: str, local_epochs: int, nodes: int, extra: str, timeout: float) -> dict:
    """Run (or read back) one cell; returns its results.json."""
    cell_dir = out / "runs" / cell.folder
    done = cell_dir / "results.json"
    if done.is_file():
        return json.loads(done.read_text(encoding="utf-8"))
    # Absolute: flwr runs with cwd=work, so a relative FLWR_HOME / output dir would nest inside it.
    work = (cell_dir / "work").resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    # Private FLWR_HOME and ports: a SuperLink left running elsewhere would run its own (stale) code.
    env = {**os.environ, "FLWR_HOME": str(work / "flwr-home"), "FEDHAR_OUTPUT_DIR": str(work / "runs"),
           "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(free_port()),
           "FLWR_LOCAL_CONTROL_API_PORT": str(free_port())}
    overrides = cell_overrides(cell, budget, local_epochs, extra)
    cmd = [sys.executable, "-m", "simulations.run_federated", str(REPO), "--run-config",
           f'hydra-overrides="{overrides}"', "--federation-config",
           f"num-supernodes={nodes} client-resources-num-cpus=1", "--timeout", str(timeout)]
    logger.info("running %s: %s", cell, overrides)
    started = time.perf_counter()
    try:
        with (cell_dir / "flwr.log").open("w", encoding="utf-8") as log:
            code = subprocess.run(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    finally:
        stop_superlink(work / "flwr-home")
    # The cell's output folder is fresh: it holds this one run's folder (<run id>/results.json).
    found = sorted((work / "runs").glob("*/results.json"))
    if code != 0 or len(found) != 1:
        raise RuntimeError(f"cell {cell} failed (exit {code}, {len(found)} results files); see {cell_dir / 'flwr.log'}")
    results = json.loads(found[0].read_text(encoding="utf-8"))
    results["bench_wall_s"] = time.perf_counter() - started
    atomic_write_text(done, json.dumps(results, indent=2))
    return results


def _stat(values: list[float]) -> list[float]:
    return list(mean_std(values))


def summarise(results: dict[Cell, dict], centralized: Path) -> dict[str, Any]:
    """Rows (label rate x variant) with mean/std over seeds, plus the centralised reference rows."""
    rows = []
    variants = (("qom", "stage2", "federated stage 1 (QoM) + centralised stage 2"),
                ("examples", "stage2", "federated stage 1 (FedAvg) + centralised stage 2"),
                *(("qom", mode, f"federated stage 1 (QoM) + {label}") for mode, label in FEDERATED_STAGE2.items()))
    for rate in sorted({c.label_rate for c in results}):
        for weighting, which, label in variants:
            cells = [(c, r) for c, r in results.items() if c.label_rate == rate and c.weighting == weighting]
            stage2 = [r["stage2"] if which == "stage2" else r.get("stage2_compare", {}).get(which)
                      for _, r in cells]
            pairs = [(c, r, s) for (c, r), s in zip(cells, stage2, strict=True) if s is not None]
            if not pairs:
                continue
            s1_rounds = [w for _, r, _ in pairs for w in r["stage1"]["round_wall_s"][1:]]  # round 1 includes start-up
            row = {"label_rate": rate, "variant": label, "seeds": [c.seed for c, _, _ in pairs],
                   "accuracy": _stat([PERCENT * s["final"]["accuracy"] for _, _, s in pairs]),
                   "macro_f1": _stat([PERCENT * s["final"]["macro_f1"] for _, _, s in pairs]),
                   "stage1_round_wall_s": statistics.median(s1_rounds) if s1_rounds else None,
                   "stage1_bytes_per_client_round": statistics.fmean(
                       r["stage1"]["bytes_down_per_client_round"] + r["stage1"]["bytes_up_per_client_round"]
                       for _, r, _ in pairs),
                   "run_wall_s": statistics.fmean(r["wall_time_s"] for _, r, _ in pairs)}
            if which in FEDERATED_STAGE2:  # FedAvg: per round after the first; a statistics head: its one round
                walls = [w for _, _, s in pairs for w in s.get("round_wall_s", [])[1:] or [s["wall_s"]]]
                row["stage2_round_wall_s"] = statistics.median(walls) if walls else None
                row["stage2_bytes_per_client_round"] = statistics.fmean(
                    s["bytes_down_per_client_round"] + s["bytes_up_per_client_round"] for _, _, s in pairs)
            rows.append(row)
    reference = []
    if centralized.is_file():
        ref = json.loads(centralized.read_text(encoding="utf-8"))
        reference = [r for r in ref.get("rows", []) if r.get("dataset") == "utd-mhad"
                     and r.get("method") in CENTRALIZED_METHODS]
    return {"rows": rows, "centralized": reference, "centralized_source": str(centralized)}


def table(summary: dict[str, Any]) -> str:
    """Markdown table of the summary."""
    lines = [("| label rate % | system | seeds | accuracy % (last epoch) | macro-F1 % | stage-1 s / round | "
              "MB / client / round (down+up) | run wall s |"), "|---|---|---|---|---|---|---|---|"]
    for r in summary["rows"]:
        mb = r.get("stage2_bytes_per_client_round", r["stage1_bytes_per_client_round"]) / 1e6
        round_s = r.get("stage2_round_wall_s") or r["stage1_round_wall_s"]
        lines.append(f"| {r['label_rate']:g} | {r['variant']} | {len(r['seeds'])} | {r['accuracy'][0]:.1f} ± "
                     f"{r['accuracy'][1]:.1f} | {r['macro_f1'][0]:.1f} ± {r['macro_f1'][1]:.1f} | "
                     f"{round_s:.1f}{' (stage 2)' if 'stage2_round_wall_s' in r else ''} | {mb:.2f} | "
                     f"{r['run_wall_s']:.0f} |")
    for r in summary["centralized"]:
        lines.append(f"| {r['label_rate']:g} | centralised {r['method']} (the --centralized summary) | {len(r['seeds'])} | "
                     f"{r['accuracy'][0]:.1f} ± {r['accuracy'][1]:.1f} | {r['macro_f1'][0]:.1f} ± "
                     f"{r['macro_f1'][1]:.1f} | - | - | {r['wall_time_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "federated")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--label-rates", type=float, nargs="+", default=[5.0, 10.0])
    parser.add_argument("--weightings", nargs="+", default=list(WEIGHTINGS), choices=list(WEIGHTINGS))
    parser.add_argument("--budget", default="cpu-utd", help="configs/budget/<name>.yaml: epochs to match")
    parser.add_argument("--local-epochs", type=int, default=4, help="stage-1 local epochs per round")
    parser.add_argument("--nodes", type=int, default=6, help="simulated SuperNodes (one per training subject)")
    parser.add_argument("--extra", default="", help="further Hydra overrides for every cell")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per cell")
    parser.add_argument("--retries", type=int, default=1, help="reruns of a failed cell (e.g. a lost heartbeat)")
    parser.add_argument("--summarize-only", action="store_true", help="rebuild summary/table from finished cells")
    parser.add_argument("--centralized", type=Path, default=REPO / "benchmarks" / "centralized" / "summary.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[Cell, dict] = {}
    # Seed-major order: a partial run still covers every variant.
    for seed in args.seeds:
        for rate in args.label_rates:
            for weighting in args.weightings:
                cell = Cell(rate, seed, weighting)
                if args.summarize_only:
                    done = args.out / "runs" / cell.folder / "results.json"
                    if done.is_file():
                        results[cell] = json.loads(done.read_text(encoding="utf-8"))
                    continue
                for attempt in range(args.retries + 1):
                    try:
                        results[cell] = run_cell(cell, args.out, args.budget, args.local_epochs, args.nodes,
                                                 args.extra, args.timeout)
                        break
                    except RuntimeError as err:
                        logger.error("attempt %d: %s", attempt + 1, err)
                if cell not in results:
                    continue
                _write_summary(args, results)
    if args.summarize_only:
        _write_summary(args, results)
    return 0


def _write_summary(args: argparse.Namespace, results: dict[Cell, dict]) -> None:
    summary = {**summarise(results, args.centralized), "budget": args.budget,
               "budget_epochs": budget_epochs(args.budget), "local_epochs": args.local_epochs,
               "nodes": args.nodes, "extra": args.extra}
    atomic_write_text(args.out / "summary.json", json.dumps(summary, indent=2))
    atomic_write_text(args.out / "table.md", table(summary))


if __name__ == "__main__":
    sys.exit(main())
