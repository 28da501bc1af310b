"""The gravity frame (each window's mean acceleration along +z, norms kept) and USC-HAD's frame and rate options."""

from __future__ import annotations

import numpy as np
import pytest

from fedhar.data.orientation import gravity_rotations, to_gravity_frame
from fedhar.data.usc_had import USCPreprocess
from fedhar.errors import ConfigError


def _windows(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(40, 25, 6))
    w[..., :3] += rng.normal(size=(40, 1, 3)) * 3.0  # a gravity per window, any direction
    return w.astype(np.float32)


def test_gravity_rotations__proper_rotations() -> None:
    rot = gravity_rotations(_windows()[..., :3])
    np.testing.assert_allclose(rot @ rot.transpose(0, 2, 1), np.broadcast_to(np.eye(3), rot.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-12)


def test_to_gravity_frame__mean_acceleration_along_z_and_norms_kept() -> None:
    w = _windows()
    out = to_gravity_frame(w)
    g = out[..., :3].mean(axis=1)
    np.testing.assert_allclose(g[:, :2], 0.0, atol=1e-5)
    np.testing.assert_allclose(g[:, 2], np.linalg.norm(w[..., :3].mean(axis=1), axis=1), rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out.reshape(40, 25, 2, 3), axis=-1),
                               np.linalg.norm(w.reshape(40, 25, 2, 3), axis=-1), rtol=1e-5)
    assert out.dtype == w.dtype


def test_to_gravity_frame__same_window_worn_another_way_gives_the_same_frame_up_to_heading() -> None:
    """A device turned by any rotation ends with the same vertical component and horizontal norm."""
    w = _windows(1)[:1]
    angle = 1.2
    axis = np.array([0.3, -0.8, 0.5]) / np.linalg.norm([0.3, -0.8, 0.5])
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    turn = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
    turned = np.einsum("ij,ntkj->ntki", turn, w.reshape(1, 25, 2, 3)).reshape(1, 25, 6).astype(np.float32)
    a, b = to_gravity_frame(w).reshape(25, 2, 3), to_gravity_frame(turned).reshape(25, 2, 3)
    np.testing.assert_allclose(a[..., 2], b[..., 2], atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(a[..., :2], axis=-1), np.linalg.norm(b[..., :2], axis=-1), atol=1e-4)


def test_to_gravity_frame__downward_and_zero_gravity_windows() -> None:
    w = np.zeros((2, 4, 3), dtype=np.float32)
    w[0, :, 2] = -1.0  # pointing straight down: turned over
    out = to_gravity_frame(w)
    np.testing.assert_allclose(out[0, :, 2], 1.0)
    np.testing.assert_array_equal(out[1], 0.0)  # no gravity: left as recorded


def test_to_gravity_frame__rejects_channels_not_in_triads() -> None:
    with pytest.raises(ValueError, match="triads"):
        to_gravity_frame(np.zeros((2, 4, 4)))


@pytest.mark.parametrize("bad", [{"imu_frame": "body"}, {"downsample": 0}, {"downsample": 1.5}])
def test_usc_preprocess__bad_frame_or_downsample_named(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match=next(iter(bad))):
        USCPreprocess.from_mapping(bad)


def test_usc_preprocess__downsample_halves_the_samples_per_second() -> None:
    pre = USCPreprocess.from_mapping({"downsample": 2})
    assert (pre.sample_rate_hz, pre.window_samples, pre.stride_samples) == (50.0, 100, 50)
