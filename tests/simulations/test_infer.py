"""simulations.infer: classify windows from an .npz with an exported model; clear errors for bad data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from fedhar.data.dataset import DatasetInfo, ModalitySpec
from fedhar.export import ExportMetadata, export_onnx, export_torchscript
from fedhar.federated import build_finetune_model
from fedhar.models import ModelConfig
from simulations import infer

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
UTD = DatasetInfo("utd-mhad", (ModalitySpec("inertial", (120, 6), 50.0), ModalitySpec("skeleton", (40, 20, 3), 30.0)),
                  tuple(f"a{i}" for i in range(1, 28)), (1, 2))

import onnx  # noqa: F401  (a test dependency: fail loudly if missing)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, np.ndarray], np.ndarray]:
    torch.manual_seed(0)
    cfg = ModelConfig.from_mapping(yaml.safe_load((CONFIG_DIR / "model" / "compact.yaml").read_text()))
    model = build_finetune_model(UTD, UTD.modality_names, cfg).eval()
    meta = ExportMetadata(UTD.modality_names, tuple(s.shape for s in UTD.modalities), UTD.class_names)
    folder = tmp_path_factory.mktemp("export")
    rng = np.random.default_rng(0)
    data = {s.name: rng.standard_normal((5, *s.shape)).astype(np.float32) for s in UTD.modalities}
    with torch.no_grad():
        expected = model({m: torch.from_numpy(v) for m, v in data.items()}).argmax(1).numpy()
    return (export_torchscript(model, meta, folder / "m.ts"), export_onnx(model, meta, folder / "m.onnx"), data,
            expected)


class TestInferCli:
    @pytest.mark.parametrize("which", [0, 1])
    def test_main__prints_pytorch_predictions(self, exported: tuple, tmp_path: Path, which: int,
                                              capsys: pytest.CaptureFixture[str]) -> None:
        model_path, data, expected = exported[which], exported[2], exported[3]
        np.savez(tmp_path / "w.npz", labels=expected, **data)
        assert infer.main(["--model", str(model_path), "--data", str(tmp_path), "--json", str(tmp_path / "p.json")]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert [int(line.split()[1]) for line in lines] == expected.tolist()
        assert lines[0].startswith("w.npz:0 ")

    def test_main__missing_modality_is_a_clear_error(self, exported: tuple, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
        np.savez(tmp_path / "w.npz", inertial=exported[2]["inertial"])
        assert infer.main(["--model", str(exported[1]), "--data", str(tmp_path / "w.npz")]) == infer.EXIT_FAULT
        assert "['skeleton'] are missing on this device" in caplog.text

    def test_main__wrong_shape_is_a_clear_error(self, exported: tuple, tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
        np.savez(tmp_path / "w.npz", inertial=np.zeros((2, 100, 6), np.float32), skeleton=exported[2]["skeleton"][:2])
        assert infer.main(["--model", str(exported[0]), "--data", str(tmp_path / "w.npz")]) == infer.EXIT_FAULT
        assert "expects (120, 6)" in caplog.text

    def test_main__empty_folder_is_a_clear_error(self, exported: tuple, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
        assert infer.main(["--model", str(exported[0]), "--data", str(tmp_path)]) == infer.EXIT_FAULT
        assert "no .npz file" in caplog.text
