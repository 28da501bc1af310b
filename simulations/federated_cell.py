"""One federated cell of a sweep (simulations/compare.py): label rate, seed and stage-1 weighting, via `flwr run`.

Every cell is one real `flwr run` (``simulations.run_federated``, its own FLWR_HOME and
SuperLink, stopped afterwards): federated stage 1 with the cell's weighting, then the
centralised stage 2 of the centralised benchmark (``federation.stage2_mode=centralized``,
``federation.centralized_epochs`` = the budget's ``stage2.epochs``, the budget's lr
milestones), so stage-1 variants are compared with stage 2 fixed; the sweep adds the
federated stage-2 modes to run from the same encoders (``federation.stage2_compare``).
Stage 1 gets ``ceil(stage1.epochs / local_epochs)`` rounds of ``local_epochs`` epochs, the
centralised budget's epoch count. A cell whose ``results.json`` exists is read back, so a
stopped sweep resumes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from fedhar.train.checkpoint import atomic_write_text
from simulations.run_federated import free_port

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
WEIGHTINGS = {"qom": "qom-fedavg", "examples": "fedavg"}


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
    with (cell_dir / "flwr.log").open("w", encoding="utf-8") as log:  # run_federated stops its own SuperLink
        code = subprocess.run(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    # The cell's output folder is fresh: it holds this one run's folder (<run id>/results.json).
    found = sorted((work / "runs").glob("*/results.json"))
    if code != 0 or len(found) != 1:
        raise RuntimeError(f"cell {cell} failed (exit {code}, {len(found)} results files); see {cell_dir / 'flwr.log'}")
    results = json.loads(found[0].read_text(encoding="utf-8"))
    results["bench_wall_s"] = time.perf_counter() - started
    atomic_write_text(done, json.dumps(results, indent=2))
    return results
