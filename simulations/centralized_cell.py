"""One centralised cell of a sweep (simulations/compare.py): a method at a label rate and seed, trained in-process.

The cell composes configs/config.yaml with its overrides and runs
:func:`simulations.centralized.train` in its own run folder
(``<out>/runs/<dataset>/<method>/lr<r>/seed<s>``); a cell whose ``results.json`` exists is
read back, not recomputed, so a stopped sweep resumes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir

from simulations.centralized import CONFIG_DIR, RESULTS_FILE, train

__all__ = ["Cell", "run_cell"]

logger = logging.getLogger(__name__)


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
