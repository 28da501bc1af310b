"""export_model: a run's final stage-2 model -> TorchScript + ONNX with its statistics, checked, used by infer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx  # noqa: F401  (a test dependency: fail loudly if missing)
import pytest
import torch
from omegaconf import OmegaConf

from fedhar.data.config import DatasetConfig
from fedhar.data.experiment import prepare_experiment
from fedhar.data.loading import load_dataset
from fedhar.export import load_exported
from fedhar.federated import build_finetune_model
from fedhar.models import ModelConfig
from simulations import export_model, infer
from strategies.run_config import compose_config
from strategies.server_app import NORMALIZER_FILE

# Three subjects, subject 3 held out (as the federated smoke runs).
OVERRIDES = ("dataset=synthetic dataset.preprocess.num_subjects=3 dataset.protocols.default.test_subjects=[3] "
             "label_rate=50 model=compact")
PRIOR = {"imu": 0.8, "noise": 0.2}


def make_run_dir(run_dir: Path, mode: str = "federated", model_file: str | None = "stage2-federated-final.pt") -> dict:
    """A run folder as the ServerApp leaves it (random stage-2 weights; no Flower needed)."""
    cfg = OmegaConf.to_container(compose_config(OVERRIDES), resolve=True)
    dataset_cfg = DatasetConfig.from_mapping(cfg["dataset"])  # type: ignore[index]
    experiment = prepare_experiment(load_dataset(dataset_cfg), dataset_cfg, 50, 0)
    info = experiment.info
    model_cfg = ModelConfig.from_mapping(cfg["model"])  # type: ignore[index]
    model = build_finetune_model(info, info.modality_names, model_cfg, PRIOR, seed=0)
    run_dir.mkdir(parents=True)
    if model_file:
        torch.save(model.state_dict(), run_dir / model_file)
    experiment.normalizer.save(run_dir / NORMALIZER_FILE)
    results = {"run_id": 7, "config": cfg, "train_subjects": [1, 2], "test_subjects": [3], "qom_prior": PRIOR,
               "normalization": {"file": NORMALIZER_FILE}, "stage2": {"mode": mode, "model_file": model_file},
               "stage2_compare": {}, "final": {"accuracy": 0.0}}
    (run_dir / "results.json").write_text(json.dumps(results))
    return results


class TestExportRun:
    def test_main__exports_both_formats_and_infer_reproduces_pytorch(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        # Prepare
        monkeypatch.setenv("FEDHAR_CACHE_DIR", str(tmp_path / "cache"))
        run_dir = tmp_path / "runs" / "7"
        make_run_dir(run_dir)
        windows = tmp_path / "windows.npz"
        # Execute
        assert export_model.main(["--run-dir", str(run_dir), "--windows", str(windows)]) == 0
        # Assert: both files, the statistics inside, the check on the held-out subject's raw windows
        out = run_dir / "export"
        report = json.loads((out / "export.json").read_text())
        assert report["passed"] and report["check_windows"] == "test subjects [3]"
        assert report["normalization_max_abs_diff"] == 0.0
        for fmt in ("torchscript", "onnx"):
            entry = report["formats"][fmt]
            assert entry["passed"] and entry["agreement"] == 1.0 and entry["accuracy"] == report["pytorch_accuracy"]
        _, meta = load_exported(out / "model.onnx")
        saved = json.loads((out / "normalizer.json").read_text())["stats"]
        np.testing.assert_array_equal(meta.normalization["imu"]["mean"],
                                      np.asarray(saved["imu"]["sum"]) / saved["imu"]["count"])
        # infer on the raw windows: the exported model normalises them itself
        capsys.readouterr()
        assert infer.main(["--model", str(out / "model.onnx"), "--data", str(windows)]) == 0
        predicted = [int(line.split()[1]) for line in capsys.readouterr().out.splitlines()]
        labels = np.load(windows)["labels"]
        assert np.mean(np.asarray(predicted) == labels) == pytest.approx(report["pytorch_accuracy"])

    def test_export__random_windows_when_the_data_is_not_here(self, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("FEDHAR_CACHE_DIR", str(tmp_path / "cache"))
        run_dir = tmp_path / "run"
        results = make_run_dir(run_dir)
        results["config"]["dataset"]["preprocess"]["num_subjects"] = 2  # the held-out subject 3 does not exist
        (run_dir / "results.json").write_text(json.dumps(results))
        report = export_model.export_run(run_dir, tmp_path / "out", samples=8)
        assert report["check_windows"] == "random" and report["num_windows"] == 8 and report["passed"]

    @pytest.mark.parametrize(("mode", "model_file", "words"), [
        ("local", None, "kept no single model"),  # local stage 2: one model per client
        ("federated", "stage2-federated-final.pt", "stage-2 weights are missing"),  # weights deleted
    ])
    def test_main__no_model__exit_1_with_reason(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture, mode: str, model_file: str | None,
                                                words: str) -> None:
        monkeypatch.setenv("FEDHAR_CACHE_DIR", str(tmp_path / "cache"))
        run_dir = tmp_path / "run"
        make_run_dir(run_dir, mode, model_file)
        if model_file:
            (run_dir / model_file).unlink()
        assert export_model.main(["--run-dir", str(run_dir)]) == export_model.EXIT_FAULT
        assert words in caplog.text

    def test_main__not_a_run_folder__exit_1(self, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
        assert export_model.main(["--run-dir", str(tmp_path)]) == export_model.EXIT_FAULT
        assert "not the folder of a finished fedhar run" in caplog.text
