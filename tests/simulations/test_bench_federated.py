"""bench_federated: cell overrides match the centralised budget; summary and table from hand-made results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simulations.bench_federated import Cell, budget_epochs, cell_overrides, summarise, table
from strategies.run_config import compose_config


def _results(acc: float, weighting: str) -> dict:
    stage1 = {"round_wall_s": [30.0, 6.0, 8.0], "bytes_down_per_client_round": 1.0e6,
              "bytes_up_per_client_round": 1.0e6}
    out = {"stage1": stage1, "stage2": {"final": {"accuracy": acc, "macro_f1": acc - 0.1}}, "wall_time_s": 100.0}
    if weighting == "qom":
        out["stage2_compare"] = {"federated": {"final": {"accuracy": 0.3, "macro_f1": 0.2}, "round_wall_s": [5.0, 4.0],
                                               "bytes_down_per_client_round": 2.0e6,
                                               "bytes_up_per_client_round": 2.0e6},
                                 "lda": {"final": {"accuracy": acc - 0.05, "macro_f1": acc - 0.1}, "wall_s": 3.0,
                                         "bytes_down_per_client_round": 1.0e6, "bytes_up_per_client_round": 16.0e6}}
    return out


class TestBenchFederated:
    def test_cell_overrides__match_budget_and_compose(self) -> None:
        stage1, stage2 = budget_epochs("tiny")
        overrides = cell_overrides(Cell(5, 1, "examples"), "tiny", 1, "dataset=synthetic")
        cfg = compose_config(overrides)
        assert cfg.federation.stage1_rounds * cfg.federation.stage1_local_epochs == stage1
        assert cfg.federation.centralized_epochs == stage2 and cfg.federation.stage2_mode == "centralized"
        assert cfg.strategy.weighting == "examples" and cfg.seed == 1 and cfg.dataset.name == "synthetic"
        assert "stage2_compare" not in overrides
        qom = compose_config(cell_overrides(Cell(5, 1, "qom"), "tiny", 1, "dataset=synthetic"))
        assert list(qom.federation.stage2_compare) == ["federated", "lda", "ccvr"]

    def test_summarise__mean_std_over_seeds_and_reference_rows(self, tmp_path: Path) -> None:
        reference = tmp_path / "summary.json"
        reference.write_text(json.dumps({"rows": [
            {"dataset": "utd-mhad", "method": "cosmo", "label_rate": 5.0, "seeds": [0], "accuracy": [50.0, 0.0],
             "macro_f1": [45.0, 0.0], "wall_time_s": 60.0},
            {"dataset": "utd-mhad", "method": "deepsense", "label_rate": 5.0, "seeds": [0], "accuracy": [30.0, 0.0],
             "macro_f1": [25.0, 0.0], "wall_time_s": 60.0}]}))
        results = {Cell(5, 0, "qom"): _results(0.4, "qom"), Cell(5, 1, "qom"): _results(0.6, "qom"),
                   Cell(5, 0, "examples"): _results(0.5, "examples")}
        summary = summarise(results, reference)
        qom, fedavg, fed2, lda = summary["rows"]  # no cell ran ccvr: no row
        assert qom["accuracy"][0] == pytest.approx(50.0) and qom["accuracy"][1] == pytest.approx(14.142, abs=1e-3)
        assert fedavg["seeds"] == [0] and fed2["accuracy"] == [30.0, 0.0]
        assert qom["stage1_round_wall_s"] == 7.0 and qom["stage1_bytes_per_client_round"] == 2.0e6
        assert fed2["stage2_bytes_per_client_round"] == 4.0e6 and fed2["stage2_round_wall_s"] == 4.0
        assert lda["accuracy"][0] == pytest.approx(45.0) and "LDA" in lda["variant"]
        assert lda["stage2_round_wall_s"] == 3.0 and lda["stage2_bytes_per_client_round"] == 17.0e6
        assert [r["method"] for r in summary["centralized"]] == ["cosmo"]
        assert table(summary).count("\n") == 2 + 4 + 1


def test_run_cell__relative_out_gives_the_run_absolute_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # flwr runs with cwd=<cell>/work: relative FLWR_HOME / output paths would resolve inside
    # it (work/benchmarks/.../work/flwr-home) and the SuperLink would not be found to stop.
    from simulations import bench_federated

    seen: dict = {}

    def fake_run(cmd: list[str], cwd: Path, env: dict, stdout, **_: object):
        seen.update(cwd=cwd, env=env)
        run_dir = Path(env["FEDHAR_OUTPUT_DIR"]) / "42"  # where the ServerApp of run 42 writes
        run_dir.mkdir(parents=True)
        (run_dir / "results.json").write_text(json.dumps({"final": {"accuracy": 0.5}}))
        return type("Done", (), {"returncode": 0})()

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(bench_federated.subprocess, "run", fake_run)
    results = bench_federated.run_cell(Cell(5, 0, "qom"), Path("bench-out"), "tiny", 1, 2, "", 60.0)
    work = tmp_path / "bench-out" / "runs" / Cell(5, 0, "qom").folder / "work"
    assert results["final"] == {"accuracy": 0.5}
    assert Path(seen["cwd"]) == work
    assert Path(seen["env"]["FLWR_HOME"]) == work / "flwr-home"
    assert Path(seen["env"]["FEDHAR_OUTPUT_DIR"]) == work / "runs"
