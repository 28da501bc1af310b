"""Encoders and projection heads: output shapes, parameter counts (method.md), errors."""

from __future__ import annotations

import pytest
import torch
from model_presets import compact_model_config

from fedhar.data.dataset import ModalitySpec
from fedhar.models import (
    CompactProjectionHead,
    CosmoProjectionHead,
    EncoderConfig,
    ModelConfig,
    ProjectionHead,
    build_encoder,
    build_head,
)
from fedhar.models.config import ConvStackConfig

INERTIAL = ModalitySpec("inertial", (120, 6), 50.0)
SKELETON = ModalitySpec("skeleton", (40, 20, 3), 30.0)
ACC = ModalitySpec("acc", (200, 3), 100.0)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class TestBuildEncoder:
    @pytest.mark.parametrize(
        ("spec", "variant", "expected"),
        [
            (INERTIAL, "reference", (16, 118 * 4)),  # Cosmo: [bsz, 16, 472]
            (SKELETON, "reference", (16, 24 * 7)),  # Cosmo: [bsz, 16, 168]
            (ACC, "reference", (16, 198)),
            (INERTIAL, "compact", (16, 8 * 6)),
            (SKELETON, "compact", (16, 4 * 10)),
            (ACC, "compact", (16, 8 * 3)),
        ],
    )
    def test_forward__shape_matches_out_shape(self, spec: ModalitySpec, variant: str, expected: tuple[int, int]) -> None:
        encoder = build_encoder(spec, EncoderConfig(variant=variant))
        out = encoder(torch.randn(3, *spec.shape))
        assert encoder.out_shape == expected
        assert out.shape == (3, *expected)

    @pytest.mark.parametrize(("spec", "expected"), [(INERTIAL, 20_000), (SKELETON, 265_000)])
    def test_parameters__match_method_md__reference(self, spec: ModalitySpec, expected: int) -> None:
        assert _count(build_encoder(spec, EncoderConfig())) == pytest.approx(expected, rel=0.02)

    def test_parameters__compact_is_smaller(self) -> None:
        for spec in (INERTIAL, SKELETON):
            assert _count(build_encoder(spec, EncoderConfig(variant="compact"))) < 25_000

    def test_forward__wrong_input_shape_raises(self) -> None:
        encoder = build_encoder(INERTIAL, EncoderConfig())
        with pytest.raises(ValueError, match=r"\(B, 120, 6\)"):
            encoder(torch.randn(2, 100, 6))

    def test_build__rank_4_shape_raises(self) -> None:
        with pytest.raises(ValueError, match="expected"):
            build_encoder(ModalitySpec("video", (4, 8, 8, 3), 30.0), EncoderConfig())

    def test_build__input_too_small_raises(self) -> None:
        with pytest.raises(ValueError, match="too small"):
            build_encoder(ModalitySpec("tiny", (2, 20, 3), 30.0), EncoderConfig())

    def test_config__mismatched_kernels_raise(self) -> None:
        with pytest.raises(ValueError, match="one kernel per block"):
            ConvStackConfig(channels=(8, 8), kernels=((2, 2),))
        with pytest.raises(ValueError, match="odd"):
            ConvStackConfig(channels=(8,), kernels=((2, 2),), padding="same")


class TestProjectionHead:
    def test_forward__unit_norm_output(self) -> None:
        head = ProjectionHead((16, 24), hidden_dims=(32,), out_dim=8).eval()
        out = head(torch.randn(5, 16, 24))
        assert out.shape == (5, 8)
        assert torch.allclose(out.norm(dim=1), torch.ones(5), atol=1e-5)

    @pytest.mark.parametrize(("pool", "pool_size"), [("flatten", None), ("mean_s", None), ("adaptive", 4)])
    def test_forward__every_pool(self, pool: str, pool_size: int | None) -> None:
        head = ProjectionHead((16, 24), hidden_dims=(32,), out_dim=8, pool=pool, pool_size=pool_size)
        assert head(torch.randn(3, 16, 24)).shape == (3, 8)

    def test_forward__wrong_shape_raises(self) -> None:
        with pytest.raises(ValueError, match=r"\(B, 16, 24\)"):
            ProjectionHead((16, 24))(torch.randn(3, 16, 25))

    def test_build__adaptive_without_size_raises(self) -> None:
        with pytest.raises(ValueError, match="pool_size"):
            ProjectionHead((16, 24), pool="adaptive")

    def test_parameters__reference_utd_total_is_13_4_m(self) -> None:
        cfg = ModelConfig()
        heads = [build_head(build_encoder(s, cfg.encoder).out_shape, cfg.head) for s in (INERTIAL, SKELETON)]
        assert sum(_count(h) for h in heads) == pytest.approx(13.4e6, rel=0.01)

    def test_variants__named_heads_match_config(self) -> None:
        assert _count(CosmoProjectionHead((16, 472))) == _count(build_head((16, 472), ModelConfig().head))
        compact = compact_model_config()
        assert _count(CompactProjectionHead((16, 48))) == _count(build_head((16, 48), compact.head))


class TestMagnitudeChannels:
    def test_norm_channels_appended_and_unchanged_by_a_rotation_of_the_sensor(self) -> None:
        from dataclasses import replace

        from fedhar.models.config import COMPACT_IMU
        from fedhar.models.encoders import ImuEncoder
        from fedhar.train.augment import random_rotations, rotate_triads

        torch.manual_seed(0)
        encoder = ImuEncoder((40, 6), replace(COMPACT_IMU, magnitude=True))
        x = torch.randn(5, 40, 6)
        extended = encoder._with_magnitude(x)
        assert extended.shape == (5, 40, 8)
        torch.testing.assert_close(extended[..., 6:], x.reshape(5, 40, 2, 3).norm(dim=-1))
        turned = encoder._with_magnitude(rotate_triads(x, random_rotations(5, 180.0)))
        torch.testing.assert_close(turned[..., 6:], extended[..., 6:], atol=1e-5, rtol=1e-5)
        assert encoder(x).shape == (5, *encoder.out_shape)

    def test_magnitude_needs_triads(self) -> None:
        from dataclasses import replace

        from fedhar.models.config import COMPACT_IMU
        from fedhar.models.encoders import ImuEncoder

        with pytest.raises(ValueError, match="triads"):
            ImuEncoder((40, 4), replace(COMPACT_IMU, magnitude=True))


TEMPORAL_IMU = ConvStackConfig(
    channels=(8, 16),
    kernels=((5,), (3,)),
    dropout=0.0,
    padding="same",
    pools=((2,), (1,)),
    layout="temporal",
    pooling="mean_max",
)


class TestTemporalLayout:
    def test_forward__one_mean_max_vector_per_window(self) -> None:
        encoder = build_encoder(ACC, EncoderConfig(variant="compact", imu=TEMPORAL_IMU))
        out = encoder(torch.randn(4, *ACC.shape))
        assert encoder.out_shape == (16, 2)  # S = last channels, F = (mean, max)
        assert out.shape == (4, 16, 2)

    def test_forward__mean_max_are_the_last_blocks_mean_and_max_over_time(self) -> None:
        from fedhar.models.encoders import ImuEncoder

        torch.manual_seed(0)
        encoder = ImuEncoder((40, 6), TEMPORAL_IMU).eval()
        x = torch.randn(3, 40, 6)
        maps = encoder.features[:-1](x.transpose(1, 2))  # (B, 16, 20): every block, no pooling
        out = encoder(x)
        torch.testing.assert_close(out[..., 0], maps.mean(dim=-1))
        torch.testing.assert_close(out[..., 1], maps.amax(dim=-1))

    def test_first_layer_mixes_the_sensor_axes(self) -> None:
        from fedhar.models.encoders import ImuEncoder

        encoder = ImuEncoder((40, 6), TEMPORAL_IMU)
        first = encoder.features[0]
        assert isinstance(first, torch.nn.Conv1d)
        assert first.in_channels == 6  # x, y, z of both sensors enter one kernel

    def test_adaptive_pooling__keeps_time_steps(self) -> None:
        from dataclasses import replace

        from fedhar.models.encoders import ImuEncoder

        cfg = replace(TEMPORAL_IMU, pooling="adaptive", out_size=(5,), magnitude=True)
        encoder = ImuEncoder((40, 6), cfg)
        assert encoder.features[0].in_channels == 8  # 6 axes + 2 norms
        assert encoder(torch.randn(2, 40, 6)).shape == (2, 16, 5)

    @pytest.mark.parametrize(
        ("changes", "match"),
        [
            ({"kernels": ((5, 3), (3, 1))}, "1-D"),
            ({"layout": "grid", "kernels": ((5, 3), (3, 1)), "pools": ()}, "mean_max"),
            ({"pooling": "mean_max", "out_size": (5,)}, "out_size null"),
            ({"layout": "diagonal"}, "layout"),
            ({"pooling": "median"}, "pooling"),
        ],
    )
    def test_config__inconsistent_settings_raise(self, changes: dict[str, object], match: str) -> None:
        from dataclasses import asdict

        with pytest.raises(ValueError, match=match):
            ConvStackConfig(**{**asdict(TEMPORAL_IMU), **changes})

    def test_skeleton__temporal_layout_refused(self) -> None:
        with pytest.raises(ValueError, match="skeleton"):
            EncoderConfig(variant="compact", skeleton=TEMPORAL_IMU)
