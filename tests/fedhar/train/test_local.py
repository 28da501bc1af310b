"""A client's local step policy (fedhar.train.local): the schedule across rounds, BatchNorm limits, global arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedhar.errors import ConfigError
from fedhar.train.config import FinetuneConfig
from fedhar.train.local import can_finetune, load_global, round_schedule


def test_round_schedule__continues_the_alternation_across_rounds() -> None:
    cfg = FinetuneConfig(epochs=4, t_iter=2, batch_size=16)
    # Round r starts at global epoch (r - 1) x 4: blocks of 2 alternate encoders / classifier.
    assert [round_schedule(cfg, False, r, 32).first_phase for r in (1, 2, 3)] == ["encoders"] * 3
    odd = FinetuneConfig(epochs=2, t_iter=2, batch_size=16)
    assert [round_schedule(odd, False, r, 32).first_phase for r in (1, 2, 3)] == ["encoders", "classifier", "encoders"]


def test_round_schedule__frozen_encoders_one_classifier_phase_and_no_batch_of_one() -> None:
    cfg = FinetuneConfig(epochs=6, t_iter=2, batch_size=16)
    frozen = round_schedule(cfg, True, 3, 17)
    assert (frozen.t_iter, frozen.first_phase, frozen.batch_size) == (6, "classifier", 17)  # 17 rows: no batch of 1
    assert round_schedule(cfg, True, 1, 16).batch_size == 16


def test_can_finetune__batchnorm1d_needs_two_rows() -> None:
    with_bn = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    assert not can_finetune(with_bn, 1) and can_finetune(with_bn, 2)
    assert can_finetune(torch.nn.Linear(3, 3), 1) and not can_finetune(torch.nn.Linear(3, 3), 0)


def test_load_global__takes_its_own_keys_and_names_a_missing_one() -> None:
    model = torch.nn.Linear(2, 1)
    arrays = {"weight": np.full((1, 2), 3.0, np.float32), "bias": np.zeros(1, np.float32), "other.w": np.ones(4)}
    load_global(model, arrays)
    assert torch.equal(model.weight, torch.full((1, 2), 3.0))
    with pytest.raises(ConfigError, match="global model lacks \\['bias'\\]"):
        load_global(model, {"weight": arrays["weight"]})
