"""Unimodal fallback for stage 1: SimCLR's NT-Xent over two augmentations of one window."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedhar.losses.fusion import CosmoFusionLoss, Objective


@dataclass(frozen=True)
class AugmentationConfig:
    """Stochastic augmentations of a time-first window ``(B, T, ...)`` (inputs z-scored).

    Parameters
    ----------
    jitter_sigma
        Std of additive Gaussian noise.
    scale_sigma
        Std of the multiplicative factor ``N(1, scale_sigma)`` drawn per sample and
        last-axis channel.
    mask_fraction
        Fraction of the time steps zeroed in one random contiguous span per sample.
    """

    jitter_sigma: float = 0.05
    scale_sigma: float = 0.1
    mask_fraction: float = 0.1

    def __post_init__(self) -> None:
        if self.jitter_sigma < 0 or self.scale_sigma < 0:
            raise ValueError(f"sigmas must be >= 0, got jitter {self.jitter_sigma}, scale {self.scale_sigma}")
        if not 0.0 <= self.mask_fraction < 1.0:
            raise ValueError(f"mask_fraction must be in [0, 1), got {self.mask_fraction}")


def augment_window(x: Tensor, generator: torch.Generator, cfg: AugmentationConfig | None = None) -> Tensor:
    """Scale, jitter and time-mask a batch of windows (Um et al. 2017; Tang et al. 2020).

    Parameters
    ----------
    x
        ``(B, T, ...)`` windows, time first (IMU ``(B, T, C)``, skeleton ``(B, T, J, 3)``).
    generator
        Source of randomness (CPU generator; the draws are moved to ``x.device``).
    cfg
        Augmentation strengths.

    Returns
    -------
    Tensor
        Augmented windows, same shape as ``x``.
    """
    cfg = cfg or AugmentationConfig()
    if x.ndim < 2:
        raise ValueError(f"x must be (B, T, ...), got {tuple(x.shape)}")
    b, t = x.shape[:2]
    scale_shape = (b,) + (1,) * (x.ndim - 2) + (x.shape[-1],)
    scale = 1 + cfg.scale_sigma * torch.randn(scale_shape, generator=generator, dtype=x.dtype)  # (B, 1.., C)
    noise = cfg.jitter_sigma * torch.randn(x.shape, generator=generator, dtype=x.dtype)  # like x
    out = x * scale.to(x.device) + noise.to(x.device)
    length = round(cfg.mask_fraction * t)
    if length > 0:
        start = torch.randint(0, t - length + 1, (b,), generator=generator).to(x.device)  # (B,)
        steps = torch.arange(t, device=x.device)  # (T,)
        mask = (steps[None] >= start[:, None]) & (steps[None] < start[:, None] + length)  # (B, T)
        out = out.masked_fill(mask.reshape(b, t, *(1,) * (x.ndim - 2)), 0.0)
    return out


def nt_xent_loss(z1: Tensor, z2: Tensor, temperature: float = 0.1) -> Tensor:
    """NT-Xent (Chen et al., SimCLR, ICML 2020, eq. 1) over ``2B`` views.

    ``l(i, j) = -log( exp(sim(z_i, z_j) / t) / sum_{k != i} exp(sim(z_i, z_k) / t) )``,
    averaged over both directions of every pair; ``sim`` is the cosine similarity.

    Parameters
    ----------
    z1, z2
        ``(B, D)`` projections of the two views (normalised here).
    temperature
        Softmax temperature ``t``.

    Returns
    -------
    Tensor
        Scalar loss.
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"z1 and z2 must both be (B, D), got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    b = z1.shape[0]
    feats = F.normalize(torch.cat([z1, z2]), dim=1)  # (2B, D)
    logits = (feats @ feats.T / temperature).fill_diagonal_(float("-inf"))  # (2B, 2B)
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(z1.device)  # (2B,)
    return F.cross_entropy(logits, target)


class UnimodalContrastiveLoss(nn.Module):
    """SimCLR NT-Xent loss for a client with one modality, where fusion cannot form views.

    Parameters
    ----------
    temperature
        Softmax temperature (SimCLR-for-HAR works commonly use 0.1).

    Examples
    --------
    >>> loss = UnimodalContrastiveLoss()(torch.randn(8, 128), torch.randn(8, 128))
    """

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        """Loss of two ``(B, D)`` views of the same windows."""
        return nt_xent_loss(z1, z2, self.temperature)


def unimodal_objective(
    generator: torch.Generator,
    loss: UnimodalContrastiveLoss | None = None,
    augmentation: AugmentationConfig | None = None,
) -> Objective:
    """The stage-1 objective ``objective(model, batch) -> loss`` of a unimodal client.

    Each modality in the batch is augmented twice, both views go through the model in
    one batch (so BatchNorm sees both), and the NT-Xent losses are averaged over the
    modalities present.

    Parameters
    ----------
    generator
        Seeded CPU generator driving the augmentations.
    loss
        The contrastive loss (default temperature 0.1).
    augmentation
        Augmentation strengths.
    """
    loss_fn = loss or UnimodalContrastiveLoss()
    aug = augmentation or AugmentationConfig()

    def objective(model: nn.Module, batch: Mapping[str, Tensor]) -> Tensor:
        if not batch:
            raise ValueError("batch holds no modality")
        losses = []
        for name, x in batch.items():
            views = torch.cat([augment_window(x, generator, aug), augment_window(x, generator, aug)])  # (2B, ...)
            z1, z2 = model({name: views})[name].chunk(2)  # (B, D) each
            losses.append(loss_fn(z1, z2))
        return torch.stack(losses).mean()

    return objective


def cosmo_or_unimodal_objective(
    generator: torch.Generator,
    fusion_loss: CosmoFusionLoss | None = None,
    unimodal_loss: UnimodalContrastiveLoss | None = None,
    augmentation: AugmentationConfig | None = None,
) -> Objective:
    """Cosmo's fusion objective for batches with >= 2 modalities, the unimodal one otherwise.

    With ``fusion_loss.copies > 1`` the batch holds that many stacked augmented copies; the
    unimodal objective, which draws its own two views, reads the first.
    """
    fusion = fusion_loss or CosmoFusionLoss()
    unimodal = unimodal_objective(generator, unimodal_loss, augmentation)

    def objective(model: nn.Module, batch: Mapping[str, Tensor]) -> Tensor:
        if len(batch) >= 2:
            return fusion(model(batch))
        return unimodal(model, {m: x.chunk(fusion.copies)[0] for m, x in batch.items()})

    return objective
