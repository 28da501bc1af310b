"""A federated run's folder as a resumable record: its status, its config, stage 1's progress.

``run.json`` is written when the ServerApp starts (status ``incomplete``, the Hydra
overrides it was composed from) and marked ``complete`` after ``results.json``; a folder
still ``incomplete`` is a killed or failed run. After each stage-1 round the checkpoint
``stage1-round<NNN>.pt`` and ``stage1-progress.json`` (the round's client metrics, central
metrics, failures and weights) are written atomically and fsync'd, in that order, so the
progress file never names a round whose checkpoint is missing.

``run_federated --resume RUN_ID`` (run-config ``resume``) composes the same config, runs
the normalisation round again (node ids change with a restart; the merge does not), starts
stage 1 from the last complete round with the rounds left, numbered as before, and runs
stage 2 in full. With full participation the final weights equal those of an uninterrupted
run (clients derive their seeds from the absolute round).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fedhar.errors import ConfigError
from fedhar.train.checkpoint import atomic_write_text

__all__ = ["RUN_FILE", "Stage1Progress", "finish_run", "load_run", "stage1_checkpoint", "start_run"]

RUN_FILE = "run.json"
PROGRESS_FILE = "stage1-progress.json"
INCOMPLETE, COMPLETE = "incomplete", "complete"


def stage1_checkpoint(run_dir: Path, server_round: int) -> Path:
    """Where round ``server_round``'s global stage-1 weights are saved."""
    return run_dir / f"stage1-round{server_round:03d}.pt"


@dataclass
class Stage1Progress:
    """What stage 1 had done when it was last saved: every completed round's records."""

    rounds: dict[str, dict[str, Any]] = field(default_factory=dict)
    central: dict[str, dict[str, Any]] = field(default_factory=dict)
    failed_rounds: dict[str, str] = field(default_factory=dict)
    client_weights: dict[str, Any] = field(default_factory=dict)
    round_wall_s: list[float] = field(default_factory=list)
    dp_releases: list[dict[str, Any]] = field(default_factory=list)
    last_round: int = 0

    def save(self, run_dir: Path) -> None:
        """Write ``stage1-progress.json`` atomically (after the round's checkpoint)."""
        atomic_write_text(run_dir / PROGRESS_FILE, json.dumps(self.__dict__, indent=1, default=float))

    @classmethod
    def load(cls, run_dir: Path) -> Stage1Progress:
        """The saved progress, or an empty one if stage 1 never completed a round."""
        path = run_dir / PROGRESS_FILE
        if not path.is_file():
            return cls()
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as err:
            raise ConfigError(f"unreadable stage-1 progress: {err}", path) from err

    def weights(self, run_dir: Path) -> dict[str, torch.Tensor] | None:
        """The last completed round's global weights (``None`` before round 1)."""
        if self.last_round == 0:
            return None
        path = stage1_checkpoint(run_dir, self.last_round)
        if not path.is_file():
            raise ConfigError(f"stage-1 progress names round {self.last_round}, whose checkpoint is missing", path)
        return torch.load(path, map_location="cpu", weights_only=True)


def start_run(run_dir: Path, run_id: int, overrides: list[str], resumed_from: dict[str, Any] | None = None) -> None:
    """Mark ``run_dir`` as an incomplete run of ``overrides`` (kept on resume, with the resume appended)."""
    record = {"status": INCOMPLETE, "overrides": overrides, "flower_runs": [run_id], "started_unix": time.time()}
    if resumed_from is not None:
        record = {**resumed_from, "status": INCOMPLETE,
                  "flower_runs": [*resumed_from.get("flower_runs", []), run_id]}
    atomic_write_text(run_dir / RUN_FILE, json.dumps(record, indent=1))


def finish_run(run_dir: Path) -> None:
    """Mark the run complete (after ``results.json`` is written)."""
    record = json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8"))
    atomic_write_text(run_dir / RUN_FILE, json.dumps({**record, "status": COMPLETE}, indent=1))


def load_run(output_dir: Path, resume: str) -> tuple[Path, dict[str, Any]]:
    """The folder and record of the run to resume.

    Raises
    ------
    ConfigError
        If there is no such run folder or record, or the run is complete.
    """
    run_dir = output_dir / resume
    path = run_dir / RUN_FILE
    if not path.is_file():
        raise ConfigError(f"no run {resume!r} to resume: {path} does not exist (is FEDHAR_OUTPUT_DIR the one of the "
                          "killed run?)", "resume")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"unreadable run record: {err}", path) from err
    if record.get("status") != INCOMPLETE:
        raise ConfigError(f"run {resume} is {record.get('status')!r}, not incomplete: nothing to resume", "resume")
    return run_dir, record
