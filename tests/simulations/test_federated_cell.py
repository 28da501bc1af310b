"""federated_cell: cell overrides match the centralised budget; run paths are absolute."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simulations.federated_cell import Cell, budget_epochs, cell_overrides
from strategies.run_config import compose_config


class TestFederatedCell:
    def test_cell_overrides__match_budget_and_compose(self) -> None:
        stage1, stage2 = budget_epochs("tiny")
        overrides = cell_overrides(Cell(5, 1, "examples"), "tiny", 1, "dataset=synthetic")
        cfg = compose_config(overrides)
        assert cfg.federation.stage1_rounds * cfg.federation.stage1_local_epochs == stage1
        assert cfg.federation.centralized_epochs == stage2 and cfg.federation.stage2_mode == "centralized"
        assert cfg.strategy.weighting == "examples" and cfg.seed == 1 and cfg.dataset.name == "synthetic"
        assert "stage2_compare" not in overrides  # the sweep's stage2_compare adds the federated stage-2 modes
        qom = compose_config(cell_overrides(Cell(5, 1, "qom"), "tiny", 1, "dataset=synthetic "
                                            "federation.stage2_compare=[lda]"))
        assert qom.strategy.weighting == "qom" and list(qom.federation.stage2_compare) == ["lda"]


def test_run_cell__relative_out_gives_the_run_absolute_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # flwr runs with cwd=<cell>/work: relative FLWR_HOME / output paths would resolve inside
    # it (work/benchmarks/.../work/flwr-home) and the SuperLink would not be found to stop.
    from simulations import federated_cell

    seen: dict = {}

    def fake_run(cmd: list[str], cwd: Path, env: dict, stdout, **_: object):
        seen.update(cwd=cwd, env=env)
        run_dir = Path(env["FEDHAR_OUTPUT_DIR"]) / "42"  # where the ServerApp of run 42 writes
        run_dir.mkdir(parents=True)
        (run_dir / "results.json").write_text(json.dumps({"final": {"accuracy": 0.5}}))
        return type("Done", (), {"returncode": 0})()

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(federated_cell.subprocess, "run", fake_run)
    results = federated_cell.run_cell(Cell(5, 0, "qom"), Path("bench-out"), "tiny", 1, 2, "", 60.0)
    work = tmp_path / "bench-out" / "runs" / Cell(5, 0, "qom").folder / "work"
    assert results["final"] == {"accuracy": 0.5}
    assert Path(seen["cwd"]) == work
    assert Path(seen["env"]["FLWR_HOME"]) == work / "flwr-home"
    assert Path(seen["env"]["FEDHAR_OUTPUT_DIR"]) == work / "runs"
