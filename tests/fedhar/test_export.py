"""fedhar.export: TorchScript and ONNX of a fine-tuned fusion classifier match PyTorch on both UTD shapes."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
import onnx  # noqa: F401  (a test dependency: fail loudly if missing)
import pytest
import torch
from torch import nn

from fedhar.data.dataset import DatasetInfo, ModalitySpec
from fedhar.errors import ExportError
from fedhar.export import (
    ExportMetadata,
    PositionalClassifier,
    StaticAdaptiveAvgPool,
    check_equivalence,
    export_onnx,
    export_torchscript,
    load_exported,
)
from fedhar.federated import build_finetune_model
from fedhar.models import ModelConfig

UTD = DatasetInfo("utd-mhad", (ModalitySpec("inertial", (120, 6), 50.0), ModalitySpec("skeleton", (40, 20, 3), 30.0)),
                  tuple(f"a{i}" for i in range(1, 28)), (1, 2))
ATOL = 1e-4
FINETUNE_STEPS = 3
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def _compact() -> ModelConfig:
    import yaml

    return ModelConfig.from_mapping(yaml.safe_load((CONFIG_DIR / "model" / "compact.yaml").read_text()))


def _finetuned(modalities: tuple[str, ...]) -> tuple[nn.Module, ExportMetadata]:
    """A compact UTD classifier after a few training steps (BatchNorm statistics and weights moved)."""
    torch.manual_seed(0)
    model = build_finetune_model(UTD, modalities, _compact(), {"inertial": 0.7, "skeleton": 0.3})
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(FINETUNE_STEPS):
        batch = {m: torch.randn(8, *UTD.modality(m).shape) for m in modalities}
        loss = nn.functional.cross_entropy(model(batch), torch.randint(0, UTD.num_classes, (8,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    meta = ExportMetadata(modalities, tuple(UTD.modality(m).shape for m in modalities), UTD.class_names)
    return model.eval(), meta


def _inputs(meta: ExportMetadata, n: int = 6) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {m: rng.standard_normal((n, *s)).astype(np.float32) for m, s in zip(meta.modalities, meta.shapes)}


class TestExportEquivalence:
    @pytest.mark.parametrize("modalities", [("inertial", "skeleton"), ("inertial",), ("skeleton",)])
    @pytest.mark.parametrize("suffix", [".ts", ".onnx"])
    def test_exported__matches_pytorch(self, tmp_path: Path, modalities: tuple[str, ...], suffix: str) -> None:
        model, meta = _finetuned(modalities)
        path = tmp_path / f"model{suffix}"
        (export_torchscript if suffix == ".ts" else export_onnx)(model, meta, path)
        runner, loaded = load_exported(path)
        report = check_equivalence(model, runner, _inputs(meta))
        assert loaded == meta
        assert report.max_abs_diff < ATOL and report.agreement == 1.0 and report.passed(ATOL)

    def test_onnx__reference_evaluator_matches_pytorch(self, tmp_path: Path) -> None:
        model, meta = _finetuned(("inertial",))
        export_onnx(model, meta, tmp_path / "m.onnx")
        runner, _ = load_exported(tmp_path / "m.onnx", prefer_onnxruntime=False)
        assert check_equivalence(model, runner, _inputs(meta, 2)).passed(ATOL)

    def test_onnx__runs_on_onnxruntime(self, tmp_path: Path, onnxruntime_module: ModuleType,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
        # Without onnxruntime, load_exported falls back to onnx.reference and every ONNX test above
        # still passes: this one needs onnxruntime (fails in CI when it is missing) and checks it ran.
        model, meta = _finetuned(("inertial",))
        export_onnx(model, meta, tmp_path / "m.onnx")
        sessions: list[object] = []
        real_session = onnxruntime_module.InferenceSession

        def spy(*args: object, **kwargs: object) -> object:
            sessions.append(session := real_session(*args, **kwargs))
            return session

        monkeypatch.setattr(onnxruntime_module, "InferenceSession", spy)
        runner, _ = load_exported(tmp_path / "m.onnx")
        assert check_equivalence(model, runner, _inputs(meta, 2)).passed(ATOL)
        assert len(sessions) == 1

    def test_onnx__dynamic_batch(self, tmp_path: Path) -> None:
        model, meta = _finetuned(("inertial",))
        runner, _ = load_exported(export_onnx(model, meta, tmp_path / "m.onnx"))
        assert runner(_inputs(meta, 1)).shape == (1, UTD.num_classes)
        assert runner(_inputs(meta, 9)).shape == (9, UTD.num_classes)


class TestStaticAdaptiveAvgPool:
    @pytest.mark.parametrize(("size", "out"), [((15, 6), (8, None)), ((7, 5), (3, 2)), ((4, 4, 4), (2, None, 1))])
    def test_forward__equals_adaptive_pooling(self, size: tuple[int, ...], out: tuple[int | None, ...]) -> None:
        x = torch.randn(2, 3, *size)
        ref = (nn.AdaptiveAvgPool2d if len(size) == 2 else nn.AdaptiveAvgPool3d)(out)(x)
        assert torch.allclose(StaticAdaptiveAvgPool(size, out)(x), ref, atol=1e-6)


class TestErrors:
    def test_positional__wrong_arity_raises(self) -> None:
        with pytest.raises(ValueError, match="expected 2 tensors"):
            PositionalClassifier(nn.Identity(), ("a", "b"))(torch.zeros(1))

    def test_load__missing_file_raises(self, tmp_path: Path) -> None:
        with pytest.raises(ExportError, match="not found"):
            load_exported(tmp_path / "nope.onnx")

    def test_load__torchscript_without_metadata_raises(self, tmp_path: Path) -> None:
        torch.jit.save(torch.jit.script(nn.Linear(2, 2)), str(tmp_path / "plain.ts"))
        with pytest.raises(ExportError, match="metadata"):
            load_exported(tmp_path / "plain.ts")


def test_equivalence__tolerance_scales_with_large_logits() -> None:
    # A closed-form LDA head's logits reach ~1e5, where float32 rounding alone is ~1e-2.
    from fedhar.export import EquivalenceReport

    assert EquivalenceReport(0.02, 1.0, 60, logit_scale=1.2e5).passed(1e-4)
    assert not EquivalenceReport(0.02, 1.0, 60, logit_scale=3.0).passed(1e-4)
    assert not EquivalenceReport(1e-5, 0.98, 60).passed(1e-4)  # a differing prediction always fails
