"""Resumable grids of cells: one atomic JSON record per finished or failed cell, mean +- std helpers.

A cell is one (method, label rate, seed) run. :func:`run_grid` runs the cells whose record
is missing (or failed, when ``retry_failed``), stores each outcome atomically as soon as
it is known, and never lets one failed cell stop the grid; a crash loses at most the cell
in progress. Used by the sweep runner, simulations/compare.py.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from fedhar.train.checkpoint import atomic_write_text

__all__ = ["DONE", "FAILED", "CellKey", "CellStore", "GridOutcome", "mean_std", "run_grid"]

logger = logging.getLogger(__name__)

DONE = "done"
FAILED = "failed"
#: Characters of the traceback kept in a failed cell's record.
TRACEBACK_CHARS = 4000


@dataclass(frozen=True, order=True)
class CellKey:
    """One cell of a grid: method name, label rate (percent) and seed."""

    method: str
    label_rate: float
    seed: int

    @property
    def name(self) -> str:
        """Short display name (``cosmo lr5 seed0``)."""
        return f"{self.method} lr{self.label_rate:g} seed{self.seed}"

    @property
    def folder(self) -> str:
        """Relative path of the cell's record, without suffix."""
        return f"{self.method}/lr{self.label_rate:g}/seed{self.seed}"


class CellStore:
    """Cell records under ``root/<method>/lr<rate>/seed<seed>.json``.

    Parameters
    ----------
    root
        Folder of the records (created on first write).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: CellKey) -> Path:
        """Where ``key``'s record lives."""
        return self.root / f"{key.folder}.json"

    def load(self, key: CellKey) -> dict[str, Any] | None:
        """The record of ``key``, or ``None`` if the cell never finished (or its record is unreadable)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            logger.warning("unreadable cell record %s (%s): the cell runs again", path, err)
            return None

    def save(self, key: CellKey, record: dict[str, Any]) -> Path:
        """Write ``record`` atomically (with the key's fields) and return its path."""
        full = {"method": key.method, "label_rate": key.label_rate, "seed": key.seed, **record}
        return atomic_write_text(self.path(key), json.dumps(full, indent=2, default=float))

    def all_records(self) -> list[dict[str, Any]]:
        """Every readable record under the root."""
        out = []
        for path in sorted(self.root.glob("**/*.json")):
            try:
                out.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, json.JSONDecodeError) as err:
                logger.warning("skipping unreadable cell record %s: %s", path, err)
        return out


@dataclass
class GridOutcome:
    """What one invocation of :func:`run_grid` did: cells run, skipped (finished before) and failed."""

    ran: list[CellKey] = field(default_factory=list)
    skipped: list[CellKey] = field(default_factory=list)
    failed: list[CellKey] = field(default_factory=list)
    records: dict[CellKey, dict[str, Any]] = field(default_factory=dict)


def needs_run(record: dict[str, Any] | None, retry_failed: bool) -> bool:
    """Whether a cell with ``record`` runs now: never finished, or failed and ``retry_failed``."""
    if record is None:
        return True
    return record.get("status") == FAILED and retry_failed


def run_grid(
    cells: Sequence[CellKey],
    runner: Callable[[CellKey], dict[str, Any]],
    store: CellStore,
    *,
    retry_failed: bool = True,
    after_cell: Callable[[GridOutcome], None] | None = None,
    progress: bool = True,
) -> GridOutcome:
    """Run the unfinished ``cells`` with ``runner`` and store each outcome.

    Parameters
    ----------
    cells
        The grid, in the order to run it.
    runner
        Returns the (JSON-serialisable) record of a successful cell; any exception marks
        the cell failed (its type, message and traceback are stored). ``KeyboardInterrupt``
        is not caught: the cell in progress is lost, nothing else.
    store
        Where records are read and written.
    retry_failed
        Re-run cells whose record says failed.
    after_cell
        Called after every cell that ran (e.g. to rewrite the table).
    progress
        Show a tqdm bar over the cells.

    Returns
    -------
    GridOutcome
        The cells run, skipped and failed now, and the records of every cell.
    """
    outcome = GridOutcome()
    bar = tqdm(cells, desc="cells", unit="cell", disable=not progress)
    for key in bar:
        record = store.load(key)
        if not needs_run(record, retry_failed):
            assert record is not None
            outcome.skipped.append(key)
            outcome.records[key] = record
            if record.get("status") == FAILED:
                outcome.failed.append(key)
            continue
        bar.set_postfix_str(key.name)
        logger.info("cell %s: running", key.name)
        started = time.perf_counter()
        try:
            record = {"status": DONE, **runner(key)}
        except Exception as err:  # one failed cell must not stop the grid
            logger.exception("cell %s failed", key.name)
            record = {"status": FAILED, "error": f"{type(err).__name__}: {err}",
                      "traceback": traceback.format_exc()[-TRACEBACK_CHARS:]}
            outcome.failed.append(key)
        record["cell_wall_s"] = time.perf_counter() - started
        store.save(key, record)
        outcome.ran.append(key)
        outcome.records[key] = store.load(key) or record
        logger.info("cell %s: %s in %.0f s", key.name, record["status"], record["cell_wall_s"])
        if after_cell is not None:
            after_cell(outcome)
    return outcome


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value) of ``values``.

    Raises
    ------
    ValueError
        If ``values`` is empty.
    """
    vals = list(values)
    if not vals:
        raise ValueError("mean_std of no values")
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)
