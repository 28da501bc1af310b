"""simulations.compare: the smoke comparison on real UTD-MHAD, resume, failed cells."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from simulations.compare import CONFIG_DIR, compose_config, per_dataset, plan, run

MIN_PNG_BYTES = 5_000
SMOKE_METHODS = ("supervised-skeleton", "cosmo", "fed-fedavg", "fed-qom")


def _cfg(out_dir: Path, *overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("compare", overrides=[f"out_dir={out_dir}", *overrides])


@pytest.mark.parametrize("budget", ["smoke", "quick", "paper"])
@pytest.mark.parametrize("dataset", ["utd-mhad", "usc-had"])
def test_plan__every_budget_composes(budget: str, dataset: str, tmp_path: Path) -> None:
    cells = plan(_cfg(tmp_path, f"compare_budget={budget}", f"dataset={dataset}"))
    assert cells and {c.method for c in cells} >= {"cosmo", "fed-fedavg", "fed-qom"}
    assert any(c.method.startswith("supervised-") for c in cells)


@pytest.mark.parametrize(("dataset", "rounds"), [("utd-mhad", 15), ("usc-had", 6)])
def test_quick_budget__federated_stage1_matches_centralised_epochs(dataset: str, rounds: int, tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "compare_budget=quick", f"dataset={dataset}")
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        budget = compose("config", overrides=[f"budget={per_dataset(cfg.compare_budget.budget, dataset)}"])
    local_epochs = int(per_dataset(cfg.compare_budget.local_epochs, dataset))
    assert -(-int(budget.stage1.epochs) // local_epochs) == rounds
    assert rounds * local_epochs == int(budget.stage1.epochs)


def test_failed_cell__reported_as_failed_and_retried_unless_told(tmp_path: Path) -> None:
    # Prepare: a method whose Hydra override raises at composition time (no data needed)
    cfg = _cfg(tmp_path, "compare_budget.methods=[broken]",
               "+methods.broken={kind: centralized, label: broken, method: cosmo, "
               "overrides: ['method=does-not-exist']}")
    # Execute
    first = run(cfg, progress=False)
    # Assert: failed, shown as FAILED with its error, not as a number
    assert first["failed"] == ["broken lr5 seed0"] and first["ran"] == first["failed"]
    line = next(x for x in (tmp_path / "table.md").read_text().splitlines() if "| broken |" in x)
    assert "FAILED" in line and "MissingConfigException" in line
    assert "FAILED" in (tmp_path / "table.csv").read_text()
    # A failed cell is retried by default, kept failed with retry_failed=false.
    assert run(cfg, progress=False)["ran"] == ["broken lr5 seed0"]
    cfg.retry_failed = False
    again = run(cfg, progress=False)
    assert again["ran"] == [] and again["failed"] == ["broken lr5 seed0"]


@pytest.mark.slow
@pytest.mark.realdata
def test_smoke_comparison__table_plots_and_resume(data_dir: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: real UTD-MHAD, private output/cache, no runtime dependency installation by flwr
    monkeypatch.setenv("FEDHAR_DATA_DIR", str(data_dir))
    monkeypatch.setenv("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
    monkeypatch.setenv("FEDHAR_CACHE_DIR", os.environ.get("FEDHAR_CACHE_DIR", str(tmp_path / "cache")))
    out = tmp_path / "cmp"
    cfg = _cfg(out, "compare_budget=smoke", "dataset=utd-mhad")
    # Execute
    first = run(cfg, progress=False)
    # Assert: every method's row with numbers, and the plots
    assert first["failed"] == [], first
    assert sorted(first["ran"]) == sorted(f"{m} lr5 seed0" for m in SMOKE_METHODS)
    rows = {r["method"]: r for r in first["rows"]}
    assert set(rows) == set(SMOKE_METHODS)
    assert all(r["status"] == "ok" and 0.0 <= r["accuracy"][0] <= 100.0 for r in rows.values())
    table = (out / "table.md").read_text()
    for method in SMOKE_METHODS:
        assert str(cfg.methods[method].label) in table
    for name in ("accuracy_vs_label_rate.png", "convergence.png", "quality_weights_fed-qom.png",
                 "quality_weights_fed-fedavg.png"):
        assert (out / name).stat().st_size > MIN_PNG_BYTES, name
    records = sorted((out / "cells").glob("**/*.json"))
    mtimes = {p: p.stat().st_mtime_ns for p in records}
    # Resume: nothing runs again, no record is rewritten
    second = run(cfg, progress=False)
    assert second["ran"] == [] and len(second["skipped"]) == len(SMOKE_METHODS)
    assert {p: p.stat().st_mtime_ns for p in records} == mtimes


def test_client_weights__read_from_the_structured_results() -> None:
    from simulations.compare import client_weights

    stage1 = {"client_weights": {"1": {"imu": {"subject-1": 0.25, "subject-2": 0.75}, "shared": {"subject-1": 0.5}}}}
    assert client_weights(stage1) == {"1": {"imu": {"1": 0.25, "2": 0.75}, "shared": {"1": 0.5}}}
    assert client_weights({}) == {}


EXPERIMENTS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment__composes_into_a_plan_of_known_methods(experiment: str, tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, f"experiment={experiment}")
    cells = plan(cfg)
    methods = list(cfg.compare_budget.methods)
    # Every named method runs, in the experiment's order, at every rate and seed it lists.
    assert [c.method for c in cells[:len(methods)]] == methods
    rates = per_dataset(cfg.compare_budget.label_rates, str(cfg.dataset.name))
    assert len(cells) == len(methods) * len(rates) * len(cfg.compare_budget.seeds)
    for name in methods:
        spec = cfg.methods[name]
        assert spec.kind in ("centralized", "federated")
        if spec.get("stage2") is not None:  # a federated stage-2 mode must run in that sweep
            assert spec.stage2 in cfg.stage2_compare
    # The experiment's own folder, named after it.
    assert Path(compose_config([f"experiment={experiment}"]).out_dir).name == experiment == cfg.compare_budget.name


def _federated_results(acc: float) -> dict:
    return {"final": {"accuracy": acc, "macro_f1": acc - 0.1}, "wall_time_s": 100.0,
            "stage1": {"round_wall_s": [30.0, 6.0], "bytes_down_per_client_round": 1.0e6,
                       "bytes_up_per_client_round": 2.0e6},
            "stage2_compare": {"lda": {"final": {"accuracy": 0.7, "macro_f1": 0.6}, "wall_s": 3.0,
                                       "bytes_down_per_client_round": 1.0e6, "bytes_up_per_client_round": 16.0e6}}}


def test_federated_stage2_mode__read_from_the_shared_run_and_missing_mode_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from simulations import compare, federated_cell
    from simulations.grid import CellKey

    calls: list[str] = []

    def fake_run_cell(cell, out, budget, local_epochs, nodes, extra, timeout):
        calls.append(extra)
        return _federated_results(0.6)

    monkeypatch.setattr(federated_cell, "run_cell", fake_run_cell)
    cfg = _cfg(tmp_path, "experiment=federated-utd")
    runner = compare.CellRunner(cfg, tmp_path)
    plain = runner(CellKey("fed-qom", 5.0, 0))
    lda = runner(CellKey("fed-qom-lda", 5.0, 0))
    # The centralised stage 2 is the run's final result; the mode its stage2_compare entry
    assert plain["accuracy"] == 0.6 and plain["bytes_per_client_round"] == 3.0e6
    assert lda["accuracy"] == 0.7 and lda["macro_f1"] == 0.6
    assert lda["bytes_per_client_round"] == 17.0e6 and lda["round_wall_s"] == [3.0]
    # Both asked for the same run: identical overrides with every mode of the sweep
    assert calls[0] == calls[1] and "federation.stage2_compare=[federated,lda,ccvr]" in calls[0]
    with pytest.raises(ValueError, match="'ccvr' did not run"):
        runner(CellKey("fed-qom-ccvr", 5.0, 0))


def test_federated_cell__relaunched_after_a_failed_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from simulations import compare, federated_cell
    from simulations.grid import CellKey

    outcomes = [RuntimeError("cell failed (exit 1)"), _federated_results(0.5)]

    def flaky_run_cell(*_: object) -> dict:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(federated_cell, "run_cell", flaky_run_cell)
    cfg = _cfg(tmp_path, "experiment=federated-utd")
    assert compare.CellRunner(cfg, tmp_path)(CellKey("fed-qom", 5.0, 0))["accuracy"] == 0.5 and not outcomes
    outcomes[:] = [RuntimeError("first"), RuntimeError("second")]
    cfg.federated_retries = 1
    with pytest.raises(RuntimeError, match="second"):
        compare.CellRunner(cfg, tmp_path)(CellKey("fed-qom", 5.0, 0))
