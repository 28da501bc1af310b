"""Tests of the device setting: resolve_device, on_device, and training / QoM / pipeline runs on CUDA."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from model_presets import compact_model_config
from train_toys import NUM_CLASSES, ToyFusion, make_dataset, toy_objective

from fedhar.data.config import DatasetConfig
from fedhar.data.experiment import ExperimentData, prepare_experiment
from fedhar.data.synthetic import make_synthetic
from fedhar.errors import ConfigError
from fedhar.pipeline import MethodConfig, run_method
from fedhar.quality import QualityConfig, encode_for_quality
from fedhar.train import (
    FinetuneConfig,
    PretrainConfig,
    SupervisedConfig,
    device_name,
    evaluate,
    finetune_iterative,
    model_device,
    on_device,
    pretrain,
    resolve_device,
    train_supervised,
)
from fedhar.train.batches import to_tensors
from fedhar.train.finetune import frozen_rnns_without_cudnn

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CPU = torch.device("cpu")
PIPELINE_CLASSES = 4
PIPELINE_STAGE1 = PretrainConfig(epochs=2, batch_size=16, progress=False)
PIPELINE_STAGE2 = FinetuneConfig(epochs=12, batch_size=8, t_iter=3, eval_every=12, progress=False)
ACCURACY_TOLERANCE = 0.15  # CPU seeds 0-3 of this run reach 0.875-1.0 (40 test samples)


def _fake_cuda(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    """Make torch report ``count`` CUDA devices (0: none) without touching a real one."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


def _pipeline_experiment() -> ExperimentData:
    """Two IMU-like modalities (one informative), 4 subjects, the last one the test set."""
    cfg = DatasetConfig(name="synthetic", protocol="default", protocols={"default": {"test_subjects": [4]}},
                        label_scheme="fraction", preprocess={
        "num_subjects": 4, "num_classes": PIPELINE_CLASSES, "samples_per_subject_class": 10,
        "modalities": {"acc": {"shape": [40, 3], "informativeness": 1.0},
                       "gyro": {"shape": [40, 3], "informativeness": 0.3}},
        "subject_shift": 0.1, "noise_std": 0.5, "seed": 0})
    return prepare_experiment(make_synthetic(cfg), cfg, 25, seed=0)


def _all_on(module: torch.nn.Module, device: torch.device) -> bool:
    return all(t.device == device for t in [*module.parameters(), *module.buffers()])


class TestResolveDevice:
    @pytest.mark.parametrize("name", ["cpu", "CPU", " cpu "])
    def test_cpu__any_spelling(self, name: str) -> None:
        assert resolve_device(name) == CPU

    def test_torch_device__accepted(self) -> None:
        assert resolve_device(torch.device("cpu")) == CPU

    def test_auto__cpu_without_cuda(self, monkeypatch: pytest.MonkeyPatch) -> None:
        _fake_cuda(monkeypatch, 0)
        assert resolve_device("auto") == CPU

    def test_auto__cuda_when_available(self, monkeypatch: pytest.MonkeyPatch) -> None:
        _fake_cuda(monkeypatch, 1)
        assert resolve_device("auto") == torch.device("cuda", 0)

    @pytest.mark.parametrize(("name", "expected"), [("cuda", 0), ("cuda:1", 1), ("CUDA:0", 0)])
    def test_cuda__explicit_index(self, monkeypatch: pytest.MonkeyPatch, name: str, expected: int) -> None:
        _fake_cuda(monkeypatch, 2)
        assert resolve_device(name) == torch.device("cuda", expected)

    @pytest.mark.parametrize("name", ["gpu", "tpu", "", "cuda:", "cuda:x", "cuda:-1", "cuda0", "mps"])
    def test_unknown__raises_naming_value(self, name: str) -> None:
        with pytest.raises(ConfigError, match="unknown device") as info:
            resolve_device(name)
        assert repr(name) in str(info.value) and info.value.culprit == "device"

    @pytest.mark.parametrize("name", ["cuda", "cuda:0"])
    def test_cuda__unavailable_raises_naming_value(self, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
        _fake_cuda(monkeypatch, 0)
        with pytest.raises(ConfigError, match="needs CUDA") as info:
            resolve_device(name)
        assert repr(name) in str(info.value)

    def test_cuda__index_beyond_visible_raises(self, monkeypatch: pytest.MonkeyPatch) -> None:
        _fake_cuda(monkeypatch, 1)
        with pytest.raises(ConfigError, match=r"'cuda:3'.*only 1"):
            resolve_device("cuda:3")

    def test_device_name__none_on_cpu(self) -> None:
        assert device_name(CPU) is None


class TestOnDevice:
    def test_none__leaves_model_where_it_is(self) -> None:
        model = ToyFusion()
        with on_device(model, None) as target:
            assert target == CPU
        assert model_device(model) == CPU

    def test_model_device__cpu_for_module_without_tensors(self) -> None:
        assert model_device(torch.nn.ReLU()) == CPU

    def test_bad_device__raises_before_moving(self) -> None:
        with pytest.raises(ConfigError, match="'gpu'"), on_device(ToyFusion(), "gpu"):
            pass

    def test_tensor_data_to__same_device_is_identity(self) -> None:
        tensors = to_tensors(make_dataset())
        assert tensors.to(CPU) is tensors and tensors.device == CPU


class TestFrozenRnnsWithoutCudnn:
    @staticmethod
    def _cudnn_seen(rnn: torch.nn.GRU, x: torch.Tensor) -> list[bool]:
        """``torch.backends.cudnn.enabled`` as the GRU's forward starts, inside the helper."""
        seen: list[bool] = []
        with frozen_rnns_without_cudnn(torch.nn.Sequential(rnn)):
            handle = rnn.register_forward_pre_hook(lambda *_: seen.append(torch.backends.cudnn.enabled))
            rnn(x)
            handle.remove()
        return seen

    def test_eval_rnn__runs_without_cudnn_then_restores(self) -> None:
        assert torch.backends.cudnn.enabled
        assert self._cudnn_seen(torch.nn.GRU(3, 4, 2).eval(), torch.randn(5, 2, 3)) == [False]
        assert torch.backends.cudnn.enabled

    def test_train_rnn__keeps_cudnn(self) -> None:
        assert self._cudnn_seen(torch.nn.GRU(3, 4).train(), torch.randn(5, 2, 3)) == [True]

    def test_error_in_forward__restores_cudnn_and_removes_hooks(self) -> None:
        rnn = torch.nn.GRU(3, 4).eval()
        with pytest.raises(RuntimeError), frozen_rnns_without_cudnn(rnn):
            rnn(torch.randn(5, 2, 7))  # wrong input width
        assert torch.backends.cudnn.enabled and not rnn._forward_pre_hooks and not rnn._forward_hooks


class TestPipelineDevice:
    def test_cpu__results_name_the_device(self) -> None:
        results = run_method(MethodConfig(name="supervised", modality="acc"), _pipeline_experiment(),
                             compact_model_config(), PIPELINE_STAGE1, FinetuneConfig(epochs=1, progress=False), None, 0)
        assert results["device"] == "cpu" and results["device_name"] is None

    def test_bad_device__raises_before_training(self) -> None:
        with pytest.raises(ConfigError, match="'cuda:x'"):
            run_method(MethodConfig(name="cosmo"), _pipeline_experiment(), compact_model_config(), PIPELINE_STAGE1,
                       PIPELINE_STAGE2, None, 0, device="cuda:x")


@CUDA
class TestCuda:
    def test_cuda_pretrain__model_comes_back_on_cpu_with_same_parameters(self) -> None:
        # Prepare: a CPU model; keep the parameter objects to check their identity survives
        torch.manual_seed(0)
        model = ToyFusion()
        params = list(model.parameters())
        before = [p.detach().clone() for p in params]
        # Execute
        history = pretrain(model, toy_objective, make_dataset(), PretrainConfig(epochs=2, batch_size=8, progress=False),
                           seed=0, device="cuda")
        # Assert: trained, back on the CPU, same Parameter objects (optimizers and shared modules still valid)
        assert np.isfinite(history.records[-1].loss)
        assert _all_on(model, CPU) and all(a is b for a, b in zip(model.parameters(), params, strict=True))
        assert any(not torch.equal(a, p) for a, p in zip(before, params, strict=True))

    def test_cuda_finetune_and_supervised__learn_and_return_to_cpu(self) -> None:
        data = make_dataset()
        for train in ("finetune", "supervised"):
            torch.manual_seed(0)
            model = ToyFusion()
            if train == "finetune":
                cfg = FinetuneConfig(epochs=6, batch_size=8, t_iter=2, eval_every=6, progress=False,
                                     gradient_modulation=True)
                history = finetune_iterative(model, data, cfg, seed=0, eval_data=data, device="cuda")
            else:
                cfg_s = SupervisedConfig(epochs=6, batch_size=8, eval_every=6, progress=False)
                history = train_supervised(model, data, cfg_s, seed=0, eval_data=data, device="cuda")
            assert _all_on(model, CPU), train
            assert history.records[-1].metrics["test_accuracy"] > 1.0 / NUM_CLASSES, train

    def test_cuda_evaluate__matches_cpu_and_leaves_model_on_cpu(self) -> None:
        torch.manual_seed(0)
        model, data = ToyFusion(), make_dataset()
        on_cpu = evaluate(model, data)
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):  # full fp32 convs, as on the CPU
            on_gpu = evaluate(model, data, device="cuda")
        assert _all_on(model, CPU)
        assert on_gpu.accuracy == pytest.approx(on_cpu.accuracy, abs=2.0 / len(data))

    def test_cuda_on_device__moves_back_on_error(self) -> None:
        model = ToyFusion()
        with pytest.raises(RuntimeError, match="boom"), on_device(model, "cuda") as target:
            assert target.type == "cuda" and _all_on(model, target)
            raise RuntimeError("boom")
        assert _all_on(model, CPU)

    def test_cuda_qom_features__match_cpu(self) -> None:
        # Prepare: the stage-1 model of the pipeline, untrained, and its unlabeled pool
        from fedhar.models.contrastive import ContrastiveFusionModel

        exp = _pipeline_experiment()
        torch.manual_seed(0)
        model = ContrastiveFusionModel(tuple(exp.info.modality(m) for m in exp.info.modality_names),
                                       compact_model_config())
        data = {m: np.asarray(exp.unlabeled.data[m]) for m in model.modalities}
        # Execute
        cpu = encode_for_quality(model, data)
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):  # TF32 convs differ by ~1e-3
            gpu = encode_for_quality(model, data, device="cuda")
        # Assert: CPU arrays, same features up to float rounding, model back on the CPU
        assert _all_on(model, CPU)
        for m in data:
            assert isinstance(gpu[m], np.ndarray)
            np.testing.assert_allclose(gpu[m], cpu[m], rtol=1e-3, atol=1e-3 * float(np.abs(cpu[m]).max()))

    def test_cuda_cosmo_pipeline__cpu_weights_and_accuracy_close_to_cpu(self, tmp_path: Path) -> None:
        # Prepare: the same short Cosmo run (QoM on stage-1 features) on the CPU and on CUDA; stage 2's
        # encoder phase backpropagates through the frozen (eval-mode) classifier GRU
        exp = _pipeline_experiment()
        quality = QualityConfig(max_samples=100, source="features")

        def run(device: str) -> dict:
            return run_method(MethodConfig(name="cosmo"), exp, compact_model_config(), PIPELINE_STAGE1,
                              PIPELINE_STAGE2, quality, 0, checkpoint_path=tmp_path / f"{device}.pt", device=device)

        # Execute
        cpu, gpu = run("cpu"), run("cuda")
        # Assert: named device, CPU tensors in the checkpoint, accuracy near the CPU run's
        assert gpu["device"].startswith("cuda:") and isinstance(gpu["device_name"], str)
        state = torch.load(tmp_path / "cuda.pt", weights_only=False)["model"]  # no map_location on purpose
        assert state and all(t.device == CPU for t in state.values())
        assert gpu["accuracy"] > 2.0 / PIPELINE_CLASSES
        assert gpu["accuracy"] >= cpu["accuracy"] - ACCURACY_TOLERANCE
        assert set(gpu["qom"]["weights"]) == {"acc", "gyro"}
