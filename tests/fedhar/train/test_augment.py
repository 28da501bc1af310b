"""Invariants of the batch augmentations (fedhar.train.augment)."""

from __future__ import annotations

import pytest
import torch

from fedhar.errors import ConfigError
from fedhar.train.augment import AugmentConfig, build_augmenter, random_rotations, rotate_triads, rotate_vertical


def test_random_rotations__orthonormal_with_unit_determinant() -> None:
    torch.manual_seed(0)
    rot = random_rotations(64, 180.0)
    eye = torch.eye(3).expand(64, 3, 3)
    assert torch.allclose(rot @ rot.transpose(1, 2), eye, atol=1e-5)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(64), atol=1e-5)


def test_random_rotations__angle_bounded() -> None:
    torch.manual_seed(0)
    rot = random_rotations(256, 20.0)
    angle = torch.rad2deg(torch.arccos(((rot.diagonal(dim1=1, dim2=2).sum(1) - 1) / 2).clamp(-1, 1)))
    assert float(angle.max()) <= 20.0 + 1e-3 and float(angle.max()) > 15.0


def test_rotate_triads__keeps_each_triad_norm_and_turns_sensors_together() -> None:
    torch.manual_seed(0)
    x = torch.randn(8, 30, 6)
    rot = random_rotations(8, 180.0)
    y = rotate_triads(x, rot)
    for k in range(2):
        assert torch.allclose(y[:, :, 3 * k:3 * k + 3].norm(dim=2), x[:, :, 3 * k:3 * k + 3].norm(dim=2), atol=1e-5)
    # the same rotation for the accelerometer and gyroscope triads of a sample
    assert torch.allclose(y[0, :, :3], x[0, :, :3] @ rot[0].T, atol=1e-5)
    assert torch.allclose(y[0, :, 3:], x[0, :, 3:] @ rot[0].T, atol=1e-5)
    assert not torch.allclose(y, x)


def test_rotate_triads__rejects_channels_not_in_triads() -> None:
    with pytest.raises(ValueError, match="triads"):
        rotate_triads(torch.zeros(2, 5, 4), torch.eye(3).expand(2, 3, 3))


def test_rotate_vertical__keeps_height_and_horizontal_distance() -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 10, 20, 3)
    y = rotate_vertical(x, 90.0)
    assert torch.allclose(y[..., 1], x[..., 1])
    assert torch.allclose(y[..., [0, 2]].norm(dim=-1), x[..., [0, 2]].norm(dim=-1), atol=1e-5)
    assert not torch.allclose(y, x)


def test_build_augmenter__off_by_default_and_keeps_shapes_when_on() -> None:
    assert build_augmenter(AugmentConfig()) is None
    augment = build_augmenter(AugmentConfig(rotation_deg=30, skeleton_rotation_deg=30, scale=0.1, jitter=0.1))
    assert augment is not None
    batch = {"inertial": torch.randn(4, 120, 6), "skeleton": torch.randn(4, 40, 20, 3)}
    out = augment(batch)
    assert {m: t.shape for m, t in out.items()} == {m: t.shape for m, t in batch.items()}
    assert all(not torch.equal(out[m], batch[m]) for m in batch)


def test_jitter_only__zero_mean_noise_of_the_configured_std() -> None:
    torch.manual_seed(0)
    augment = build_augmenter(AugmentConfig(jitter=0.5))
    assert augment is not None
    x = torch.zeros(64, 100, 3)
    noise = augment({"acc": x})["acc"]
    assert abs(float(noise.mean())) < 0.01 and float(noise.std()) == pytest.approx(0.5, rel=0.02)


@pytest.mark.parametrize("bad", [{"rotation_deg": 200.0}, {"jitter": -0.1}, {"warp": 1.0}, {"rotation_scope": "phone"},
                                 {"rotation_axis": "up"},
                                 {"views": 3}, {"views": 2}])  # views 2 with nothing on: identical copies
def test_config__bad_values_rejected(bad: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        AugmentConfig.from_mapping(bad)


@pytest.mark.parametrize("scope", ["modality", "device"])
def test_build_augmenter__rotation_scope(scope: str) -> None:
    """USC-HAD's acc and gyro are two modalities of one device: own rotations, or one shared per sample."""
    torch.manual_seed(0)
    augment = build_augmenter(AugmentConfig(rotation_deg=90.0, rotation_scope=scope))
    assert augment is not None
    x = torch.randn(8, 20, 3)
    out = augment({"acc": x, "gyro": x.clone()})
    assert not torch.allclose(out["acc"], x, atol=1e-3)  # it did rotate
    torch.testing.assert_close(out["acc"].norm(dim=-1), out["gyro"].norm(dim=-1))
    assert torch.allclose(out["acc"], out["gyro"]) == (scope == "device")


def test_build_augmenter__vertical_axis_turns_the_heading_only() -> None:
    """rotation_axis=vertical: z (the gravity frame's vertical) is untouched, the horizontal norm kept."""
    torch.manual_seed(0)
    augment = build_augmenter(AugmentConfig(rotation_deg=180.0, rotation_axis="vertical"))
    assert augment is not None
    x = torch.randn(16, 20, 6)
    out = augment({"acc": x})["acc"].reshape(16, 20, 2, 3)
    triads = x.reshape(16, 20, 2, 3)
    torch.testing.assert_close(out[..., 2], triads[..., 2])
    torch.testing.assert_close(out[..., :2].norm(dim=-1), triads[..., :2].norm(dim=-1))
    assert not torch.allclose(out[..., :2], triads[..., :2], atol=1e-3)


def test_build_augmenter__two_views_stack_two_rotations_of_each_sample() -> None:
    """views=2: rows [A; B], each a rotation of the same sample (equal norms, different values)."""
    torch.manual_seed(0)
    augment = build_augmenter(AugmentConfig(rotation_deg=90.0, views=2))
    assert augment is not None
    x = torch.randn(4, 20, 3)
    out = augment({"acc": x})["acc"]
    assert out.shape == (8, 20, 3)
    first, second = out.chunk(2)
    torch.testing.assert_close(first.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(second.norm(dim=-1), x.norm(dim=-1))
    assert not torch.allclose(first, second, atol=1e-3)


def test_views__only_for_stage_1() -> None:
    from fedhar.train.config import FinetuneConfig, PretrainConfig

    assert PretrainConfig.from_mapping({"augment": {"jitter": 0.1, "views": 2}}).augment.views == 2
    with pytest.raises(ConfigError, match="augment.views"):
        FinetuneConfig.from_mapping({"augment": {"jitter": 0.1, "views": 2}})
