"""ClientApp handlers called directly with Message objects: tiny synthetic data, and one-subject device folders."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from clients.client_app import app, node_device
from clients.settings import parse_config
from fedhar import keys
from fedhar.aggregation import validate_update
from fedhar.data.config import DatasetConfig
from fedhar.data.dataset import DatasetInfo
from fedhar.data.experiment import prepare_experiment
from fedhar.data.federation import DataSummary, FederationData, merge_summaries, summarize_subject, validate_summary
from fedhar.data.loading import load_dataset
from fedhar.errors import ConfigError, DatasetNotFoundError
from fedhar.federated import build_finetune_model, build_pretrain_model
from fedhar.models import ModelConfig
from strategies.norm_round import MESSAGE_TYPE, parse_summary_reply
from strategies.qom_fedavg import parse_reply
from strategies.run_config import compose_config
from strategies.server_app import _setup_record

# Three subjects, subject 3 held out: partitions 0 and 1 are subjects 1 and 2.
BASE = ("dataset=synthetic dataset.preprocess.num_subjects=3 dataset.protocols.default.test_subjects=[3] "
        "dataset.preprocess.samples_per_subject_class=6 label_rate=50 model=compact budget=tiny")


@pytest.fixture(autouse=True)
def task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages can only be built inside a run: pretend to be task 1 of run 1 on node 0."""
    for name in ("_task_id", "_run_id", "_node_id"):
        monkeypatch.setattr(TaskIdentity, name, 1 if name != "_node_id" else 0)


@pytest.fixture
def setup_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], dict]:
    """The ``setup`` JSON the ServerApp sends, for extra Hydra overrides."""
    monkeypatch.setenv("FEDHAR_CACHE_DIR", str(tmp_path / "cache"))

    def _setup(extra: str = "", base: str = BASE) -> dict:
        return _setup_record(compose_config(f"{base} {extra}"))

    return _setup


def test_setup__carries_the_recipes_fusion_loss_to_the_client(setup_for: Callable[[str], dict]) -> None:
    # Federated stage 1 trains the same objective as the centralised one: the method group's loss.
    for extra, beta in (("", 0.0), ("method.loss.hard_positive_beta=5", 5.0)):
        settings = parse_config(ConfigRecord({keys.SETUP: json.dumps(setup_for(extra)), keys.SEED: 0}))
        assert settings.fusion_loss == {"temperature": 0.07, "hard_positive_beta": beta,
                                        "fusion_weights": (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)}


TRAIN_SUBJECTS = [1, 2]


def _info(setup: dict) -> DatasetInfo:
    return load_dataset(DatasetConfig.from_mapping(setup["dataset"])).info


def _query(setup: dict, context: Context, train_subjects: list[int] | None = None) -> Message:
    """Send the normalisation round's query to one node, as the ServerApp does."""
    config = ConfigRecord({keys.SETUP: json.dumps(setup), keys.SEED: 0,
                           keys.TRAIN_SUBJECTS: train_subjects or TRAIN_SUBJECTS})
    return app(Message(content=RecordDict({keys.CONFIG: config}), dst_node_id=7, message_type=MESSAGE_TYPE), context)


def _summary_of(reply: Message) -> DataSummary:
    summary, reason = parse_summary_reply(reply)
    assert reason is None and summary is not None
    return summary


def _federation(setup: dict) -> FederationData:
    """The normalisation round over the simulated nodes (partition 0 and 1), merged: the same path as a run."""
    replies = [_query(setup, _context(**{keys.PARTITION_ID: pid})) for pid in range(len(TRAIN_SUBJECTS))]
    return merge_summaries(_summary_of(r) for r in replies)


def _message(kind: str, setup: dict, arrays: ArrayRecord, subject: int = 1, **extra: object) -> Message:
    """A server message to ``subject``'s node: the shared entries and that subject's own federation view."""
    cfg = DatasetConfig.from_mapping(setup["dataset"])
    view = _federation(setup).for_subject(subject, cfg, setup["label_rate"], 0)
    shared = {keys.SETUP: json.dumps(setup), keys.SEED: 0, keys.TRAIN_SUBJECTS: TRAIN_SUBJECTS, **view.to_config()}
    config = ConfigRecord({**shared, keys.LOCAL_EPOCHS: 1, keys.SERVER_ROUND: 1, **extra})  # type: ignore[arg-type]
    stage = kind.split(".")[1] if "." in kind else ""
    if stage:
        config[keys.STAGE] = stage
    content = RecordDict({keys.ARRAYS: arrays, keys.CONFIG: config})
    return Message(content=content, dst_node_id=7, message_type=kind)


def _context(**node_config: object) -> Context:
    return Context(run_id=1, node_id=7, node_config=dict(node_config), state=RecordDict(), run_config={})  # type: ignore[arg-type]


def _global_pretrain(setup: dict) -> tuple[dict[str, np.ndarray], ArrayRecord]:
    info = _info(setup)
    torch.manual_seed(0)
    model = build_pretrain_model(info, info.modality_names, ModelConfig.from_mapping(setup["model"]))
    arrays = ArrayRecord(model.state_dict())
    return {k: v.numpy() for k, v in arrays.items()}, arrays


class TestNormStatsQuery:
    def test_query__replies_a_valid_summary_of_its_own_subject(self, setup_for: Callable) -> None:
        setup = setup_for()
        reply = _query(setup, _context(**{keys.PARTITION_ID: 1}))
        summary = _summary_of(reply)
        info = _info(setup)
        assert summary.subject == 2 and validate_summary(summary, info, TRAIN_SUBJECTS) is None
        assert reply.content[keys.METRICS][keys.NUM_EXAMPLES] == int(summary.class_counts.sum()) > 0

    def test_query__merged_stats_equal_the_centralised_fit(self, setup_for: Callable) -> None:
        setup = setup_for("+dataset.modality_subsets={1:[imu]}")
        cfg = DatasetConfig.from_mapping(setup["dataset"])
        central = prepare_experiment(load_dataset(cfg), cfg, setup["label_rate"], 0)
        merged = _federation(setup).stats
        assert merged.moments["noise"].count < merged.moments["imu"].count  # subject 1 has no noise sensor
        for name, mom in central.normalizer.stats.moments.items():
            assert merged.moments[name].count == mom.count
            np.testing.assert_allclose(merged.moments[name].sum_sq, mom.sum_sq, rtol=1e-12)
            np.testing.assert_allclose(merged.mean(name), central.normalizer.stats.mean(name), rtol=1e-10, atol=1e-12)

    def test_train__without_the_normalisation_round__raises(self, setup_for: Callable) -> None:
        setup = setup_for()
        _, arrays = _global_pretrain(setup)
        config = ConfigRecord({keys.SETUP: json.dumps(setup), keys.SEED: 0, keys.TRAIN_SUBJECTS: TRAIN_SUBJECTS,
                               keys.STAGE: "pretrain"})
        msg = Message(content=RecordDict({keys.ARRAYS: arrays, keys.CONFIG: config}), dst_node_id=7,
                      message_type="train.pretrain")
        with pytest.raises(ConfigError, match="normalisation round"):
            app(msg, _context(**{keys.PARTITION_ID: 0}))


class TestPretrainHandler:
    def test_pretrain__replies_a_valid_update_and_caches_qom(self, setup_for: Callable) -> None:
        # Prepare
        setup = setup_for()
        reference, arrays = _global_pretrain(setup)
        context = _context(**{keys.PARTITION_ID: 1, keys.NUM_PARTITIONS: 2})
        # Execute
        reply = app(_message("train.pretrain", setup, arrays, subject=2), context)
        # Assert
        update, reason = parse_reply(reply)
        assert reason is None and update is not None
        assert update.client_id == "subject-2" and set(update.modalities) == {"imu", "noise"}
        assert validate_update(update, reference) is None
        assert keys.STATE_QOM in context.state.metric_records
        assert np.isfinite(update.train_loss)

    def test_pretrain__single_modality_client_uses_unimodal_fallback(self, setup_for: Callable) -> None:
        setup = setup_for("+dataset.modality_subsets={1:[imu]}")
        reference, arrays = _global_pretrain(setup)
        reply = app(_message("train.pretrain", setup, arrays), _context(**{keys.SUBJECT_ID: 1}))
        update, reason = parse_reply(reply)
        assert reason is None and update is not None
        assert update.modalities == ("imu",) and update.qom["imu"] <= 1.0
        assert not any(k.startswith(("encoders.noise", "heads.noise")) for k in update.arrays)
        assert validate_update(update, reference) is None

    @pytest.mark.parametrize("node_config", [{keys.PARTITION_ID: 5}, {keys.SUBJECT_ID: 3}, {}],
                             ids=["partition out of range", "test subject", "no id"])
    def test_pretrain__bad_node_config_raises(self, setup_for: Callable, node_config: dict) -> None:
        setup = setup_for()
        _, arrays = _global_pretrain(setup)
        with pytest.raises(ConfigError):
            app(_message("train.pretrain", setup, arrays), _context(**node_config))


class TestFinetuneAndEvaluateHandlers:
    def test_finetune_then_evaluate__reply_classifier_and_metrics(self, setup_for: Callable) -> None:
        setup = setup_for()
        info = _info(setup)
        model = build_finetune_model(info, info.modality_names, ModelConfig.from_mapping(setup["model"]),
                                     {"imu": 0.7, "noise": 0.3}, seed=0)
        arrays = ArrayRecord(model.state_dict())
        reference = {k: v.numpy() for k, v in arrays.items()}
        prior = {f"{keys.QOM_PRIOR_PREFIX}imu": 0.7, f"{keys.QOM_PRIOR_PREFIX}noise": 0.3}
        context = _context(**{keys.PARTITION_ID: 0})
        reply = app(_message("train.finetune", setup, arrays, **prior), context)
        update, reason = parse_reply(reply)
        assert reason is None and update is not None
        assert any(k.startswith("classifier.") for k in update.arrays)
        assert validate_update(update, reference) is None
        metrics = reply.content[keys.METRICS]
        assert 0.0 <= metrics[keys.ACCURACY] <= 1.0
        evaluated = app(_message("evaluate", setup, arrays, **prior), context)
        record = evaluated.content[keys.METRICS]
        assert record[keys.NUM_EXAMPLES] > 0 and 0.0 <= record[keys.MACRO_F1] <= 1.0

    def _finetune_arrays(self, setup: dict) -> tuple[dict[str, np.ndarray], ArrayRecord]:
        info = _info(setup)
        model = build_finetune_model(info, info.modality_names, ModelConfig.from_mapping(setup["model"]), seed=0)
        arrays = ArrayRecord(model.state_dict())
        return {k: v.numpy() for k, v in arrays.items()}, arrays

    def test_finetune__freeze_encoders_trains_only_the_classifier(self, setup_for: Callable) -> None:
        setup = setup_for()
        reference, arrays = self._finetune_arrays(setup)
        reply = app(_message("train.finetune", setup, arrays, **{keys.FREEZE_ENCODERS: True}),
                    _context(**{keys.PARTITION_ID: 0}))
        update, _ = parse_reply(reply)
        assert update is not None
        for name, value in update.arrays.items():
            same = np.array_equal(value, reference[name])
            assert same if name.startswith(keys.ENCODER_PREFIX) else True
        assert any(not np.array_equal(v, reference[k]) for k, v in update.arrays.items() if k.startswith("classifier."))

    def test_finetune__one_label_with_batchnorm_skips_training_and_says_so(
        self, setup_for: Callable, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        # A client holding a single labeled row cannot train a BatchNorm1d classifier: it replies
        # the global weights, its honest num-examples (1) and no train loss; it never crashes.
        from clients import client_app

        setup = setup_for("model.classifier.batch_norm=true")
        reference, arrays = self._finetune_arrays(setup)
        original = client_app.load_partition

        def one_label(context: Context, settings: object) -> object:
            local = original(context, settings)  # type: ignore[arg-type]
            part = local.partition
            one = replace(part, labeled=part.labeled.subset(np.arange(1)))
            return replace(local, partition=one)

        monkeypatch.setattr(client_app, "load_partition", one_label)
        reply = app(_message("train.finetune", setup, arrays), _context(**{keys.PARTITION_ID: 0}))
        update, reason = parse_reply(reply)
        assert reason is None and update is not None
        assert update.num_examples == 1 and update.train_loss is None
        assert all(np.array_equal(v, reference[k]) for k, v in update.arrays.items())
        assert "cannot train" in caplog.text


UTD_TRAIN = [1, 2, 3, 4, 5, 6]
REAL = "model=compact budget=tiny"


@pytest.mark.realdata
class TestDeployedDevice:
    """node-config subject-id + data-path, the folder holding only that subject's files (and strays of another)."""

    @pytest.mark.slow  # stage-1 training on the real data
    def test_utd__query_then_pretrain_on_its_own_files(self, setup_for: Callable, utd_device: Path,
                                                       data_dir: Path) -> None:
        # Prepare: the server's view (full dataset) gives the other subjects' summaries
        setup = setup_for("dataset=utd-mhad dataset.protocol=cosmo label_rate=5", base=REAL)
        cfg = DatasetConfig.from_mapping(setup["dataset"])
        full = load_dataset(cfg)
        device = _context(**{keys.SUBJECT_ID: 1, keys.DATA_PATH: str(utd_device)})
        # Execute: the normalisation round on the device
        own = _summary_of(_query(setup, device, UTD_TRAIN))
        # Assert: the device summarised exactly subject 1's rows
        reference = summarize_subject(full, 1, full.modalities)
        assert np.array_equal(own.class_counts, reference.class_counts)
        for name, mom in reference.stats.moments.items():
            assert np.array_equal(own.stats.moments[name].sum_sq, mom.sum_sq)
        # Execute: stage 1 on the device with the merged statistics
        merged = merge_summaries([own, *(summarize_subject(full, s, full.modalities) for s in UTD_TRAIN[1:])])
        info = full.info
        torch.manual_seed(0)
        model = build_pretrain_model(info, info.modality_names, ModelConfig.from_mapping(setup["model"]))
        arrays = ArrayRecord(model.state_dict())
        config = ConfigRecord({keys.SETUP: json.dumps(setup), keys.SEED: 0, keys.TRAIN_SUBJECTS: UTD_TRAIN,
                               keys.LOCAL_EPOCHS: 1, keys.SERVER_ROUND: 1, keys.STAGE: "pretrain",
                               **merged.for_subject(1, cfg, 5, 0).to_config()})
        msg = Message(content=RecordDict({keys.ARRAYS: arrays, keys.CONFIG: config}), dst_node_id=7,
                      message_type="train.pretrain")
        update, reason = parse_reply(app(msg, device))
        # Assert: a valid update of subject 1, trained on its unlabeled rows of the global 5 % split
        central = prepare_experiment(full, cfg, 5, 0, stats=merged.stats)
        assert reason is None and update is not None and update.client_id == "subject-1"
        assert update.num_examples == central.partitions[1].num_unlabeled
        assert validate_update(update, {k: v.numpy() for k, v in arrays.items()}) is None

    def test_usc__query_on_its_own_files(self, setup_for: Callable, usc_device: Path) -> None:
        setup = setup_for("dataset=usc-had", base=REAL)
        cfg = DatasetConfig.from_mapping(setup["dataset"])
        device = _context(**{keys.SUBJECT_ID: 1, keys.DATA_PATH: str(usc_device)})
        own = _summary_of(_query(setup, device, list(range(1, 13))))
        reference = summarize_subject(load_dataset(cfg, subjects=[1]), 1, ("acc", "gyro"))
        assert own.subject == 1 and np.array_equal(own.class_counts, reference.class_counts)
        assert np.array_equal(own.stats.moments["gyro"].sum, reference.stats.moments["gyro"].sum)

    def test_usc__device_without_its_subject__names_folder_and_subject(self, setup_for: Callable,
                                                                        usc_device: Path) -> None:
        setup = setup_for("dataset=usc-had", base=REAL)
        device = _context(**{keys.SUBJECT_ID: 3, keys.DATA_PATH: str(usc_device)})
        with pytest.raises(DatasetNotFoundError, match="for subject 3") as err:
            _query(setup, device, list(range(1, 13)))
        assert err.value.culprit == str(usc_device / "Subject3")


class TestNodeDevice:
    """node-config ``device``: where a node trains (cpu unless the node says otherwise)."""

    def test_absent__cpu(self) -> None:
        assert node_device(_context(**{keys.SUBJECT_ID: 1})) == torch.device("cpu")

    def test_explicit_cpu__cpu(self) -> None:
        assert node_device(_context(**{keys.DEVICE: "cpu"})) == torch.device("cpu")

    def test_unknown__config_error_naming_it(self) -> None:
        with pytest.raises(ConfigError, match="gpu0"):
            node_device(_context(**{keys.DEVICE: "gpu0"}))

    @pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a node without CUDA")
    def test_cuda_without_gpu__config_error(self) -> None:
        with pytest.raises(ConfigError, match="cuda"):
            node_device(_context(**{keys.DEVICE: "cuda"}))
