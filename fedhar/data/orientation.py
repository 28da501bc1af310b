"""Per-window sensor frames: turn each IMU window so that its gravity points along +z.

A phone worn in another orientation (USC-HAD's held-out subjects 13-14 tilt theirs about
80 degrees from the others, docs/learning.md section 3) shows the same movement on other
axes. Turning every window by the rotation that takes its mean acceleration (gravity plus
the window's average body acceleration) onto +z removes the tilt and keeps what is vertical
(z) apart from what is horizontal (x, y). What is left between wearers is the heading about
the vertical axis, which a yaw-only rotation augmentation (``augment.rotation_axis=vertical``)
covers. Each window is turned on its own: a client needs nothing but its own data.

What it removes: the tilt itself, so postures told apart only by which way the device
points (lying vs standing) must be told apart by something else. Measured on USC-HAD it
costs more than it fixes (docs/learning.md section 11: Cosmo 39.7 % against 51.8 %, the
random forest 52.2 % against 68.5 %), so it is off by default.
"""

from __future__ import annotations

import numpy as np

__all__ = ["IMU_FRAMES", "gravity_rotations", "to_gravity_frame"]

IMU_FRAMES = ("device", "gravity")
"""``device``: the sensor's own axes, as recorded; ``gravity``: each window turned so that its
mean acceleration points along +z."""

#: Below this norm a window's mean acceleration has no direction (free fall, or no gravity in the
#: data): that window is left as recorded.
_MIN_GRAVITY_NORM = 1e-6


def gravity_rotations(acc: np.ndarray) -> np.ndarray:
    """``(N, 3, 3)`` rotations taking each window's mean acceleration direction onto +z.

    The smallest such rotation (about the axis ``g x z``); a window whose mean points
    along -z is turned by 180 degrees about x; one with no mean acceleration gets the identity.

    Parameters
    ----------
    acc
        ``(N, T, 3)`` accelerometer windows.
    """
    if acc.ndim != 3 or acc.shape[2] != 3:
        raise ValueError(f"gravity_rotations needs (N, T, 3) accelerometer windows, got shape {acc.shape}")
    g = acc.astype(np.float64).mean(axis=1)  # (N, 3)
    norm = np.linalg.norm(g, axis=1)
    rot = np.tile(np.eye(3), (len(g), 1, 1))
    valid = norm > _MIN_GRAVITY_NORM
    u = np.zeros_like(g)
    u[valid] = g[valid] / norm[valid, None]
    cos = u[:, 2]
    flip = valid & (cos < -1 + 1e-9)
    rot[flip] = np.diag([1.0, -1.0, -1.0])
    turn = valid & ~flip
    v = np.cross(u[turn], np.array([0.0, 0.0, 1.0]))  # axis * sin(angle)
    k = np.zeros((len(v), 3, 3))
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -v[:, 2], v[:, 1], -v[:, 0]
    k = k - k.transpose(0, 2, 1)
    rot[turn] = np.eye(3) + k + (k @ k) / (1.0 + cos[turn])[:, None, None]
    return rot


def to_gravity_frame(windows: np.ndarray, gravity_channels: slice = slice(0, 3)) -> np.ndarray:
    """Turn every (x, y, z) triad of each window by the rotation of its accelerometer triad.

    Parameters
    ----------
    windows
        ``(N, T, C)`` windows of one device, ``C`` a multiple of 3 (e.g. acc then gyro).
    gravity_channels
        The accelerometer triad whose mean gives each window's gravity direction.

    Returns
    -------
    np.ndarray
        ``(N, T, C)`` windows in their gravity frames, same dtype: the accelerometer's mean
        along +z, every triad's norm unchanged.
    """
    n, t, c = windows.shape
    if c % 3:
        raise ValueError(f"a gravity frame needs channels in (x, y, z) triads, got {c} channels")
    rot = gravity_rotations(windows[..., gravity_channels])
    triads = windows.astype(np.float64).reshape(n, t, c // 3, 3)
    return np.einsum("nij,ntkj->ntki", rot, triads).reshape(n, t, c).astype(windows.dtype)
