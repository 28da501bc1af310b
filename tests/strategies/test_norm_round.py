"""Normalisation round on the server: valid replies merged, each malformed one rejected and logged with its node id."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from unittest.mock import Mock

import numpy as np
import pytest
import yaml
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid

from fedhar import keys
from fedhar.data.config import DatasetConfig
from fedhar.data.dataset import HARDataset
from fedhar.data.federation import merge_summaries, summarize_subject
from fedhar.data.loading import load_dataset
from fedhar.errors import FederationError
from strategies.norm_round import MESSAGE_TYPE, run_norm_round

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "dataset"
TRAIN = (1, 2, 3, 4, 5)


@pytest.fixture(scope="module")
def synthetic() -> HARDataset:
    return load_dataset(DatasetConfig.from_mapping(yaml.safe_load((CONFIG_DIR / "synthetic.yaml").read_text())))


def _instruction(node: int) -> Message:
    return Message(content=RecordDict(), dst_node_id=node, message_type=MESSAGE_TYPE)


def summary_reply(node: int, arrays: dict[str, np.ndarray], subject: object) -> Message:
    """A client's reply from ``node``: the ArrayRecord ``norm-stats`` and the MetricRecord with its subject."""
    content = RecordDict({keys.NORM_STATS: ArrayRecord({k: Array(np.asarray(v)) for k, v in arrays.items()}),
                          keys.METRICS: MetricRecord({keys.SUBJECT: subject})})  # type: ignore[dict-item]
    return Message(content=content, reply_to=_instruction(node))


def _grid(replies: list[Message]) -> Mock:
    grid = Mock(spec=Grid)
    grid.get_node_ids.return_value = [m.metadata.src_node_id for m in replies]
    grid.send_and_receive.return_value = replies
    return grid


def _arrays(ds: HARDataset, subject: int) -> dict[str, np.ndarray]:
    return summarize_subject(ds, subject, ds.modalities).to_arrays()


def _nan(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {**arrays, "imu.sum": np.full_like(arrays["imu.sum"], np.nan)}


# (id, the reply node 15 sends instead of subject 5's good one, words of the logged reason)
BAD_REPLIES: list[tuple[str, Callable[[HARDataset], Message], str]] = [
    # a NaN in the sums
    ("nan", lambda ds: summary_reply(15, _nan(_arrays(ds, 5)), 5), "NaN or Inf"),
    # moments of 4 channels for the 6-channel imu
    ("wrong shape", lambda ds: summary_reply(15, {**_arrays(ds, 5), "imu.sum": np.zeros(4), "imu.sum-sq": np.ones(4)},
                                             5), "expected (6,)"),
    # nothing counted
    ("count 0", lambda ds: summary_reply(15, {**_arrays(ds, 5), "imu.count": np.array([0])}, 5), "count must be > 0"),
    # the record is missing
    ("no record", lambda ds: Message(content=RecordDict({keys.METRICS: MetricRecord({keys.SUBJECT: 5})}),
                                     reply_to=_instruction(15)), "expected an ArrayRecord"),
    # the subject is not an integer
    ("float subject", lambda ds: summary_reply(15, _arrays(ds, 5), 5.0), "must be an integer"),
    # the held-out subject
    ("test subject", lambda ds: summary_reply(15, _arrays(ds, 6), 6), "not a training subject"),
    # the client crashed
    ("error", lambda ds: Message(Error(code=0, reason="disk on fire"), reply_to=_instruction(15)), "disk on fire"),
]


class TestRunNormRound:
    def test_round__merges_every_valid_reply_and_sends_the_query(self, synthetic: HARDataset) -> None:
        # Prepare: nodes 11..15 are subjects 1..5, replying in scrambled order
        replies = [summary_reply(10 + s, _arrays(synthetic, s), s) for s in (3, 1, 5, 2, 4)]
        grid = _grid(replies)
        config = ConfigRecord({keys.TRAIN_SUBJECTS: list(TRAIN)})
        # Execute
        result = run_norm_round(grid, config, synthetic.info, TRAIN, timeout=5.0)
        # Assert: the same bits as merging the summaries directly, every node asked once
        expected = merge_summaries(summarize_subject(synthetic, s, synthetic.modalities) for s in TRAIN)
        assert result.federation.to_dict() == expected.to_dict() and result.rejected == {}
        sent = grid.send_and_receive.call_args.args[0]
        assert sorted(m.metadata.dst_node_id for m in sent) == [11, 12, 13, 14, 15]
        assert {m.metadata.message_type for m in sent} == {"query.norm_stats"}
        assert sent[0].content[keys.CONFIG][keys.TRAIN_SUBJECTS] == list(TRAIN)

    @pytest.mark.parametrize(("bad", "words"), [(b, w) for _, b, w in BAD_REPLIES], ids=[i for i, _, _ in BAD_REPLIES])
    def test_round__malformed_reply__rejected_and_logged_with_node_id(
        self, synthetic: HARDataset, bad: Callable[[HARDataset], Message], words: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        replies = [summary_reply(10 + s, _arrays(synthetic, s), s) for s in (1, 2, 3, 4)] + [bad(synthetic)]
        result = run_norm_round(_grid(replies), ConfigRecord(), synthetic.info, TRAIN, timeout=5.0)
        assert result.federation.subjects == (1, 2, 3, 4)
        assert list(result.rejected) == [15] and words in result.rejected[15]
        assert "rejected the reply of node 15" in caplog.text and words in caplog.text
        assert result.summary()["num_rejected"] == 1 and result.summary()["rejected"] == {"15": result.rejected[15]}

    def test_round__subject_claimed_by_two_nodes__both_rejected(self, synthetic: HARDataset) -> None:
        # Node 15 claims subject 1, which node 11 also claims: neither is trusted, whoever came first.
        replies = [summary_reply(10 + s, _arrays(synthetic, s), s) for s in (1, 2, 3, 4)]
        replies.append(summary_reply(15, _arrays(synthetic, 1), 1))
        result = run_norm_round(_grid(replies), ConfigRecord(), synthetic.info, TRAIN, timeout=5.0)
        assert result.federation.subjects == (2, 3, 4)
        assert sorted(result.rejected) == [11, 15] and all("conflict" in r for r in result.rejected.values())
        assert result.node_subjects == {12: 2, 13: 3, 14: 4}

    def test_round__fewer_subjects_than_the_privacy_minimum__raises(self, synthetic: HARDataset) -> None:
        replies = [summary_reply(10 + s, _arrays(synthetic, s), s) for s in (1, 2)]
        assert run_norm_round(_grid(replies), ConfigRecord(), synthetic.info, TRAIN, timeout=5.0,
                              min_subjects=2).node_subjects == {11: 1, 12: 2}
        with pytest.raises(FederationError, match="fewer than privacy.min_merged_subjects=3"):
            run_norm_round(_grid(replies), ConfigRecord(), synthetic.info, TRAIN, timeout=5.0, min_subjects=3)

    def test_round__no_valid_reply__raises(self, synthetic: HARDataset) -> None:
        replies = [summary_reply(11, _nan(_arrays(synthetic, 1)), 1)]
        with pytest.raises(FederationError, match="no valid reply"):
            run_norm_round(_grid(replies), ConfigRecord(), synthetic.info, TRAIN, timeout=5.0)

    def test_round__a_modality_without_statistics__raises(self, synthetic: HARDataset) -> None:
        arrays = summarize_subject(synthetic, 1, ("imu",)).to_arrays()
        with pytest.raises(FederationError, match=r"modalities \['noise'\]"):
            run_norm_round(_grid([summary_reply(11, arrays, 1)]), ConfigRecord(), synthetic.info, TRAIN, timeout=5.0)

    def test_round__silent_node__counted_as_rejected(self, synthetic: HARDataset) -> None:
        grid = _grid([summary_reply(11, _arrays(synthetic, 1), 1)])
        grid.get_node_ids.return_value = [11, 12]
        result = run_norm_round(grid, ConfigRecord(), synthetic.info, TRAIN, timeout=5.0)
        assert result.rejected == {12: "no reply within 5 s"}
