"""stage2.head: Cosmo's iterative training by default, or a closed-form LDA head on the frozen encoders."""

from __future__ import annotations

import pytest
import torch

from fedhar.data.dataset import HARDataset
from fedhar.errors import ConfigError
from fedhar.models.fusion_classifier import FusionClassifierModel
from fedhar.train.class_stats import LinearFusionHead
from fedhar.train.config import FinetuneConfig
from fedhar.train.loop import TEST_ACCURACY
from fedhar.train.stage2 import run_stage2
from tests.fedhar.train.train_toys import NUM_CLASSES, ToyFusion, make_dataset


def _split(informative: float = 1.0) -> tuple[HARDataset, HARDataset]:
    """Subjects 1-3 to fit on, subject 4 held out (same class signals, other samples)."""
    data = make_dataset(informative=informative, subjects=4, per_class=6)
    return data.subset(data.indices_of_subjects([1, 2, 3])), data.subset(data.indices_of_subjects([4]))


def _model() -> FusionClassifierModel:
    torch.manual_seed(0)
    toy = ToyFusion()
    return FusionClassifierModel(toy.encoders, toy.classifier)


def test_lda_head__frozen_encoders_a_linear_head_and_one_evaluated_record() -> None:
    data, test = _split()
    model = _model()
    before = {k: v.clone() for k, v in model.encoders.state_dict().items()}
    fitted, history = run_stage2(model, data, FinetuneConfig(head="lda", lda_passes=0), seed=0, eval_data=test)
    assert isinstance(fitted.classifier, LinearFusionHead) and fitted.encoders is model.encoders
    for k, v in fitted.encoders.state_dict().items():
        torch.testing.assert_close(v, before[k])  # BatchNorm statistics included: nothing trained
    assert len(history) == 1 and history.records[0].phase == "lda"
    # random conv features of the informative sensor separate its classes on the held-out subject
    assert history.last(TEST_ACCURACY) > 0.9


def test_lda_head__noise_only_features_stay_near_chance() -> None:
    data, test = _split(informative=0.0)
    _, history = run_stage2(_model(), data, FinetuneConfig(head="lda", lda_passes=0), seed=0, eval_data=test)
    assert history.last(TEST_ACCURACY) < 2.0 / NUM_CLASSES  # chance 0.25 on 24 held-out rows


def test_iterative_head__is_finetune_iterative() -> None:
    data = make_dataset(per_class=2)
    model = _model()
    fitted, history = run_stage2(model, data, FinetuneConfig(epochs=2, t_iter=1, progress=False), seed=0)
    assert fitted is model and len(history) == 2 and {r.phase for r in history} == {"encoders", "classifier"}


@pytest.mark.parametrize("bad", [{"head": "svm"}, {"lda_passes": -1}, {"lda_shrinkage": 1.5}])
def test_config__bad_head_settings_named(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match=next(iter(bad))):
        FinetuneConfig.from_mapping(bad)
