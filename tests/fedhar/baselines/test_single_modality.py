"""Tests for the single-modality supervised baseline."""

from __future__ import annotations

import pytest
import torch
from baseline_helpers import USC_SPECS, UTD_SPECS, make_batch, supervised_loss, take_train_step

from fedhar.baselines import SingleModalityClassifier
from fedhar.data.dataset import ModalitySpec
from fedhar.models import ClassifierConfig, EncoderConfig, FusionClassifierModel, build_encoder

CASES = [(spec, 27) for spec in UTD_SPECS] + [(spec, 12) for spec in USC_SPECS]
COMPACT = (EncoderConfig(variant="compact"), ClassifierConfig(variant="compact", gru_hidden=8, mlp_hidden=(16,)))


class TestSingleModalityClassifier:
    @pytest.mark.parametrize(("spec", "num_classes"), CASES, ids=[s.name for s, _ in CASES])
    def test_train_step__reference_model_gives_logits_and_updates(self, spec: ModalitySpec, num_classes: int) -> None:
        # Prepare
        model = SingleModalityClassifier(spec, num_classes)
        batch = make_batch([spec], 4)
        # Execute / Assert
        assert model.eval()(batch).shape == (4, num_classes)
        take_train_step(model, supervised_loss(batch, torch.arange(4)))

    def test_init__exposes_encoders_and_classifier_for_stage2_loops(self) -> None:
        model = SingleModalityClassifier(UTD_SPECS[0], 27, *COMPACT)
        assert isinstance(model, FusionClassifierModel)
        assert list(model.encoders) == ["inertial"]
        assert all(key.startswith(("encoders.inertial.", "classifier.")) for key in model.state_dict())

    def test_init__uses_a_given_pretrained_encoder(self) -> None:
        encoder = build_encoder(UTD_SPECS[1], COMPACT[0])
        model = SingleModalityClassifier(UTD_SPECS[1], 27, classifier_cfg=COMPACT[1], encoder=encoder)
        assert model.encoders["skeleton"] is encoder

    def test_forward__raises_on_wrong_modality_set(self) -> None:
        model = SingleModalityClassifier(UTD_SPECS[0], 27, *COMPACT)
        with pytest.raises(ValueError, match=r"expected modalities \['inertial'\], got \['inertial', 'skeleton'\]"):
            model(make_batch(UTD_SPECS, 2))

    def test_init__raises_on_encoder_without_out_shape(self) -> None:
        with pytest.raises(ValueError, match="no out_shape"):
            SingleModalityClassifier(USC_SPECS[0], 12, encoder=torch.nn.Linear(3, 3))
