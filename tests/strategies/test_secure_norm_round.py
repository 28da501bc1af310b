"""The normalisation round under secure aggregation, against the real ClientApp in one process.

Every message goes to ``clients.client_app.app`` of its node (each node its own Context and
synthetic subject): the census in the clear, then the moments through SecAgg+. The server's
merged statistics must equal the plain round's, and no reply may hold a subject's sums.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict

from clients.client_app import app
from fedhar import keys
from fedhar.data.config import DatasetConfig
from fedhar.data.loading import load_dataset
from fedhar.secure_sum import SecureAggregationConfig
from strategies.norm_round import run_norm_round
from strategies.run_config import compose_config
from strategies.secure_aggregation import SecureAggregation
from strategies.server_app import _setup_record
from tests.strategies.conftest import LoopbackGrid

BASE = "dataset=synthetic model=compact budget=tiny label_rate=50"
TRAIN = (1, 2, 3, 4, 5)  # synthetic: subject 6 is held out
NODES = {101 + i: i for i in range(len(TRAIN))}  # node -> partition id


@pytest.fixture(autouse=True)
def private_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FEDHAR_CACHE_DIR", str(tmp_path / "cache"))


class AppGrid(LoopbackGrid):
    """Delivers each message to the ClientApp (its mods included) with its node's Context (a partition id)."""

    def __init__(self, silent: Iterable[int] = (), silent_stage: str = "") -> None:
        super().__init__({n: app for n in NODES}, silent, silent_stage)
        self.contexts = {n: Context(run_id=1, node_id=n, node_config={keys.PARTITION_ID: pid}, state=RecordDict(),
                                    run_config={}) for n, pid in NODES.items()}

    def deliver(self, msg: Message, node: int) -> Message:
        return app(msg, self.contexts[node])


def _round(grid: AppGrid, secure: bool, extra: str = ""):  # type: ignore[no-untyped-def]
    setup = _setup_record(compose_config(f"{BASE} {extra}"))
    dataset_cfg = DatasetConfig.from_mapping(setup["dataset"])
    info = load_dataset(dataset_cfg).info
    config = ConfigRecord({keys.SETUP: json.dumps(setup), keys.SEED: 0, keys.TRAIN_SUBJECTS: list(TRAIN)})
    bounds = dataset_cfg.bounds_of(info.modalities)
    setting = SecureAggregation(SecureAggregationConfig(enabled=True), {}, 5.0, 0) if secure else None
    return run_norm_round(grid, config, info, TRAIN, timeout=5.0, secure=setting, bounds=bounds)


def _sums_in(msg: Message) -> list[str]:
    return [k for record in msg.content.array_records.values() for k in record
            if k.endswith((keys.SUM_SUFFIX, keys.SUM_SQ_SUFFIX))]


def test_secure_norm_round__equals_the_plain_round_and_the_server_sees_no_sums() -> None:
    plain = _round(AppGrid(), secure=False)
    grid = AppGrid()
    secure = _round(grid, secure=True)
    assert secure.node_subjects == plain.node_subjects and not secure.rejected
    assert secure.summary()["secure_sum"] is True and plain.summary()["secure_sum"] is False
    for name, mom in plain.federation.stats.moments.items():
        got = secure.federation.stats.moments[name]
        assert got.count == mom.count
        # fixed point: 2^29 levels over [-1, 1] per client, in units of row scale x values per row x bound (10)
        np.testing.assert_allclose(got.mean, mom.mean, atol=1e-5)
        np.testing.assert_allclose(got.std, mom.std, rtol=1e-5)
    for subject, counts in plain.federation.class_counts.items():
        np.testing.assert_array_equal(secure.federation.class_counts[subject], counts)
    assert grid.received and not any(_sums_in(m) for m in grid.received if not m.has_error())
    masked = [m for m in grid.received if keys.SECAGG_MASKED in m.content.array_records]
    assert len(masked) == len(TRAIN)


def test_secure_norm_round__a_node_dropping_in_collect__left_out_of_the_federation() -> None:
    grid = AppGrid(silent=[103], silent_stage="collect_masked_vectors")
    result = _round(grid, secure=True)
    assert 103 not in result.node_subjects and "103" not in result.federation.to_dict()["class_counts"]
    assert result.federation.subjects == (1, 2, 4, 5) and 103 in result.rejected
    survivors = _round(AppGrid(), secure=False)  # the plain merge of the four others, for reference
    counts = sum(int(c.sum()) for s, c in survivors.federation.class_counts.items() if s != 3)
    assert result.federation.stats.moments["imu"].count == counts * 60  # 60 time steps per row
