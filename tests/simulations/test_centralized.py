"""End-to-end test of the centralised Hydra entry point on synthetic data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from simulations.centralized import CONFIG_DIR, METRICS_FILE, RESULT_KEYS, RESULTS_FILE, train


def _compose(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


class TestConfigs:
    @pytest.mark.parametrize("method", ["cosmo", "cmc", "cpc", "deepsense", "attnsense"])
    def test_compose__every_method(self, method: str) -> None:
        from fedhar.pipeline import MethodConfig

        cfg = _compose([f"method={method}"])
        assert MethodConfig.from_mapping(dict(cfg.method)).name == method

    def test_compose__cosmos_hard_positive_weight_off_in_both_recipes(self) -> None:
        # CLMM's hard positives are an option (docs/learning.md §10), off by default; the other
        # methods' loss groups never receive the key.
        for recipe in ("fedhar", "paper"):
            assert _compose([f"recipe={recipe}"]).method.loss.hard_positive_beta == 0.0
            assert "hard_positive_beta" not in _compose(["method=cmc", f"recipe={recipe}"]).method.loss

    def test_compose__device_defaults_to_cpu(self) -> None:
        assert _compose([]).device == "cpu"

    def test_compose__budget_overrides_stage_epochs(self) -> None:
        cfg = _compose(["budget=cpu-utd"])
        assert cfg.stage1.epochs < 300 and cfg.stage2.epochs < 500 and cfg.stage1.batch_size == 32


class TestTrain:
    @pytest.mark.slow
    def test_train__writes_results_with_all_keys(self, tmp_path: Path) -> None:
        # Prepare: synthetic data, compact model, tiny budget, run folder under tmp_path
        cfg = _compose(["dataset=synthetic", "label_rate=20", "budget=tiny", "model=compact", "seed=1",
                        "quality.max_samples=100", "save_model=true", f"paths.output_dir={tmp_path}", f"paths.cache_dir={tmp_path}/c"])
        # Execute
        results = train(cfg)
        # Assert: one run folder with config, metrics and results holding every key
        (run_dir,) = list((tmp_path / "synthetic" / "cosmo" / "lr20" / "seed1").iterdir())
        assert Path(results["run_dir"]) == run_dir
        saved = json.loads((run_dir / RESULTS_FILE).read_text())
        for key in RESULT_KEYS:
            assert key in saved
        assert saved["wall_time_s"]["run"] > 0 and saved["parameters"]["stage2_model"] > 0
        assert saved["device"] == "cpu" and saved["device_name"] is None
        assert len((run_dir / METRICS_FILE).read_text().splitlines()) == cfg.stage1.epochs + cfg.stage2.epochs
        assert (run_dir / "config.yaml").is_file() and (run_dir / "model.pt").is_file()
        assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]


    def test_train__unknown_device_fails_before_the_run_folder(self, tmp_path: Path) -> None:
        from fedhar.errors import ConfigError

        cfg = _compose(["dataset=synthetic", "budget=tiny", "device=gpu", f"paths.output_dir={tmp_path}"])
        with pytest.raises(ConfigError, match="unknown device 'gpu'"):
            train(cfg)
        assert not list(tmp_path.iterdir())
