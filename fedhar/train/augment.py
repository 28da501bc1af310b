"""Random sensor augmentations applied to each training batch: rotation, scaling, jitter.

Few labels and subjects who wear a device differently call for augmentations that
mimic what varies between people and sessions (the usual ones of HAR contrastive
learning, e.g. Um et al. 2017, Tang et al. 2020):

- IMU ``(B, T, C)`` with ``C`` a multiple of 3 (x, y, z of each sensor): a random 3-D
  rotation per sample, by an angle up to ``rotation_deg`` about a uniformly random axis,
  applied to every triad of that sample's modality (UTD-MHAD's one inertial modality:
  accelerometer and gyroscope turn together). Where a device's sensors are separate
  modalities (USC-HAD's acc and gyro), ``rotation_scope`` says whether each modality draws
  its own rotation (``modality``, the default: measured better on USC-HAD, see
  docs/learning.md) or all IMU modalities of a sample share one (``device``, the physical
  re-orientation). ``rotation_axis=vertical`` turns about z only (the heading), for data in a
  gravity frame (``dataset.preprocess.imu_frame=gravity``, :mod:`fedhar.data.orientation`),
  where the tilt is already removed. A rotation keeps each triad's norm.
- ``views = 2`` (stage 1 only): every batch is augmented twice and the copies are stacked
  along the batch axis (rows ``[A; B]``), so a contrastive objective that knows it
  (:class:`fedhar.losses.CosmoFusionLoss` with ``copies=2``) also has positives that differ
  in the augmentation, not only in the fusion weights.
- Skeleton ``(B, T, J, 3)``: one random rotation per sample about the vertical (y) axis,
  up to ``skeleton_rotation_deg`` (the subject facing the camera at another angle).
- Every modality: a per-sample, per-channel scale factor ``1 + N(0, scale^2)`` and
  additive Gaussian noise of standard deviation ``jitter`` (in normalised units).

The inputs are already standardised per channel, so an IMU rotation here turns the
standardised vector, not the physical one: it does not reproduce a physical re-orientation
exactly, but covers the same family of mixings of the axes. Randomness comes from torch's
generator of the batch's device, which the training loops seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from fedhar.config_mapping import build
from fedhar.errors import ConfigError

__all__ = ["AugmentConfig", "Augmenter", "build_augmenter", "random_rotations", "rotate_triads", "rotate_vertical"]

ROTATION_SCOPES = ("modality", "device")
ROTATION_AXES = ("any", "vertical")
_STRENGTHS = ("rotation_deg", "skeleton_rotation_deg", "scale", "jitter")

Augmenter = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
"""Maps a batch (modality -> ``(B, *shape)``) to an augmented batch of the same shapes."""


@dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations a training loop applies to each batch (all off by default).

    Parameters
    ----------
    rotation_deg
        Largest IMU rotation angle in degrees (180: any orientation); 0 turns it off.
    skeleton_rotation_deg
        Largest skeleton rotation about the vertical axis in degrees; 0 turns it off.
    scale
        Standard deviation of the per-channel scale factor around 1; 0 turns it off.
    jitter
        Standard deviation of additive Gaussian noise; 0 turns it off.
    rotation_scope
        ``modality``: each IMU modality draws its own rotation; ``device``: the IMU
        modalities of a sample share one.
    rotation_axis
        ``any``: about a uniformly random axis; ``vertical``: about z (IMU data in a
        gravity frame).
    views
        Augmented copies of each batch, stacked along the batch axis (1: the batch itself
        augmented once; 2: two independent augmentations, for a two-view contrastive loss).
    """

    rotation_deg: float = 0.0
    skeleton_rotation_deg: float = 0.0
    scale: float = 0.0
    jitter: float = 0.0
    rotation_scope: str = "modality"
    rotation_axis: str = "any"
    views: int = 1

    def __post_init__(self) -> None:
        for name in ("rotation_deg", "skeleton_rotation_deg"):
            if not 0.0 <= float(getattr(self, name)) <= 180.0:
                raise ConfigError(f"{name} must be in [0, 180], got {getattr(self, name)}", f"augment.{name}")
        for name in ("scale", "jitter"):
            if float(getattr(self, name)) < 0.0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}", f"augment.{name}")
        if self.rotation_scope not in ROTATION_SCOPES:
            raise ConfigError(f"rotation_scope must be one of {ROTATION_SCOPES}, got {self.rotation_scope!r}",
                              "augment.rotation_scope")
        if self.rotation_axis not in ROTATION_AXES:
            raise ConfigError(f"rotation_axis must be one of {ROTATION_AXES}, got {self.rotation_axis!r}",
                              "augment.rotation_axis")
        if self.views not in (1, 2):
            raise ConfigError(f"views must be 1 or 2, got {self.views}", "augment.views")
        if self.views == 2 and not self.enabled:
            raise ConfigError("views=2 needs an augmentation to differ: set rotation_deg, "
                              "skeleton_rotation_deg, scale or jitter", "augment.views")

    @property
    def enabled(self) -> bool:
        """Whether any augmentation is on."""
        return any(float(getattr(self, name)) > 0 for name in _STRENGTHS)

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]) -> AugmentConfig:
        """Build from a plain mapping; unknown keys raise :class:`ConfigError`."""
        return build(cls, cfg, "augment")


def random_rotations(n: int, max_deg: float, device: torch.device | None = None,
                     vertical: bool = False) -> torch.Tensor:
    """``(n, 3, 3)`` rotation matrices: uniform random axes (``vertical``: the z axis), angles uniform in
    ``[-max_deg, max_deg]``."""
    if vertical:
        axis = torch.zeros(n, 3, device=device)
        axis[:, 2] = 1.0
    else:
        axis = torch.randn(n, 3, device=device)
    axis = axis / axis.norm(dim=1, keepdim=True).clamp_min(1e-12)
    angle = (torch.rand(n, device=device) * 2 - 1) * math.radians(max_deg)
    k = torch.zeros(n, 3, 3, device=device)
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
    k = k - k.transpose(1, 2)
    eye = torch.eye(3, device=device).expand(n, 3, 3)
    sin, cos = angle.sin().view(n, 1, 1), angle.cos().view(n, 1, 1)
    return eye + sin * k + (1 - cos) * (k @ k)


def rotate_triads(x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Rotate every consecutive (x, y, z) triad of ``x`` ``(B, T, C)`` by its sample's ``(B, 3, 3)`` matrix.

    Raises
    ------
    ValueError
        If ``C`` is not a multiple of 3.
    """
    b, t, c = x.shape
    if c % 3:
        raise ValueError(f"IMU rotation needs channels in (x, y, z) triads, got {c} channels")
    triads = x.reshape(b, t, c // 3, 3)
    return torch.einsum("bij,btkj->btki", rotations, triads).reshape(b, t, c)


def rotate_vertical(x: torch.Tensor, max_deg: float) -> torch.Tensor:
    """Rotate skeletons ``(B, T, J, 3)`` about the y axis by a random angle per sample."""
    angle = (torch.rand(x.shape[0], device=x.device) * 2 - 1) * math.radians(max_deg)
    cos, sin = angle.cos(), angle.sin()
    rot = torch.zeros(x.shape[0], 3, 3, device=x.device)
    rot[:, 0, 0], rot[:, 0, 2], rot[:, 1, 1], rot[:, 2, 0], rot[:, 2, 2] = cos, sin, 1.0, -sin, cos
    return torch.einsum("bij,btkj->btki", rot, x)


def _augment_one(x: torch.Tensor, cfg: AugmentConfig, rotations: dict[str, torch.Tensor]) -> torch.Tensor:
    if x.dim() == 3 and cfg.rotation_deg > 0 and x.shape[2] % 3 == 0:
        # rotation_scope "device": drawn at the first IMU modality and reused by the others.
        if cfg.rotation_scope == "modality" or "imu" not in rotations:
            rotations["imu"] = random_rotations(x.shape[0], cfg.rotation_deg, x.device,
                                                vertical=cfg.rotation_axis == "vertical")
        x = rotate_triads(x, rotations["imu"])
    if x.dim() == 4 and cfg.skeleton_rotation_deg > 0:
        x = rotate_vertical(x, cfg.skeleton_rotation_deg)
    if cfg.scale > 0:
        shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (x.shape[-1],)
        x = x * (1 + cfg.scale * torch.randn(shape, device=x.device))
    if cfg.jitter > 0:
        x = x + cfg.jitter * torch.randn_like(x)
    return x


def build_augmenter(cfg: AugmentConfig) -> Augmenter | None:
    """The batch transform of ``cfg``; ``None`` when every augmentation is off."""
    if not cfg.enabled:
        return None

    def augment_once(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        rotations: dict[str, torch.Tensor] = {}
        return {m: _augment_one(x, cfg, rotations) for m, x in batch.items()}

    if cfg.views == 1:
        return augment_once

    def augment(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        copies = [augment_once(batch) for _ in range(cfg.views)]
        return {m: torch.cat([c[m] for c in copies]) for m in batch}  # (views * B, ...)

    return augment
