"""Projection heads: sequence features ``(B, S, F)`` -> L2-normalised projections ``(B, D)``."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from fedhar.models.config import HeadConfig, HeadPool


class ProjectionHead(nn.Module):
    """Generic projection head: pool, an MLP, then (optionally) L2-normalise.

    Cosmo (Ouyang et al., MobiCom 2022), stage 1: ``p = g(z) / ||g(z)||_2`` with
    ``g`` an MLP over the flattened encoder output ``z`` (Cosmo's code: Linear(S*F, 1280),
    BatchNorm, ReLU, Linear(1280, 128)).

    Parameters
    ----------
    in_shape
        Encoder output shape ``(S, F)``.
    hidden_dims
        Widths of the hidden Linear(-BatchNorm)-ReLU layers.
    out_dim
        Projection dimension ``D``.
    pool
        ``"flatten"`` -> ``S*F`` inputs, ``"mean_s"`` -> mean over S, ``F`` inputs,
        ``"adaptive"`` -> adaptive average pooling of F to ``pool_size``, ``S*pool_size``.
    pool_size
        Output length of ``"adaptive"`` pooling.
    batch_norm
        BatchNorm1d after each hidden Linear.
    normalize
        L2-normalise the output.

    Raises
    ------
    ValueError
        For non-positive sizes, an unknown ``pool``, or (in ``forward``) an input whose
        shape is not ``(B, S, F)``.

    Examples
    --------
    >>> import torch
    >>> head = ProjectionHead((16, 472), hidden_dims=(1280,), out_dim=128)
    >>> head(torch.randn(4, 16, 472)).shape
    torch.Size([4, 128])
    """

    def __init__(
        self,
        in_shape: tuple[int, int],
        hidden_dims: tuple[int, ...] = (1280,),
        out_dim: int = 128,
        pool: HeadPool = "flatten",
        pool_size: int | None = None,
        batch_norm: bool = True,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        s, f = in_shape
        if s < 1 or f < 1:
            raise ValueError(f"in_shape must be positive (S, F), got {in_shape}")
        if pool == "flatten":
            in_dim = s * f
        elif pool == "mean_s":
            in_dim = f
        elif pool == "adaptive":
            if pool_size is None or pool_size < 1:
                raise ValueError(f"pool 'adaptive' needs pool_size >= 1, got {pool_size}")
            in_dim = s * pool_size
        else:
            raise ValueError(f"pool must be 'flatten', 'mean_s' or 'adaptive', got {pool!r}")
        if out_dim < 1 or any(h < 1 for h in hidden_dims):
            raise ValueError(f"sizes must be positive, got hidden_dims={hidden_dims}, out_dim={out_dim}")
        self.in_shape = (s, f)
        self.pool = pool
        self.pool_size = pool_size
        self.normalize = normalize
        self.out_dim = out_dim
        layers: list[nn.Module] = []
        for width in hidden_dims:
            layers.append(nn.Linear(in_dim, width))
            if batch_norm:
                layers.append(nn.BatchNorm1d(width))
            layers.append(nn.ReLU(inplace=True))
            in_dim = width
        layers.append(nn.Linear(in_dim, out_dim))
        self.mlp = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        """Map sequence features ``(B, S, F)`` to projections ``(B, D)``."""
        if z.ndim != 3 or tuple(z.shape[1:]) != self.in_shape:
            raise ValueError(f"head expects (B, {self.in_shape[0]}, {self.in_shape[1]}), got {tuple(z.shape)}")
        if self.pool == "flatten":
            x = z.reshape(z.shape[0], -1)  # (B, S*F)
        elif self.pool == "mean_s":
            x = z.mean(dim=1)  # (B, F)
        else:
            pool_size = self.pool_size
            assert pool_size is not None  # __init__ requires it for pool 'adaptive'
            x = F.adaptive_avg_pool1d(z, pool_size).reshape(z.shape[0], -1)  # (B, S*pool_size)
        p = self.mlp(x)  # (B, D)
        return F.normalize(p, dim=1) if self.normalize else p


class CosmoProjectionHead(ProjectionHead):
    """Cosmo's head: flatten -> Linear(S*F, 1280) -> BatchNorm -> ReLU -> Linear(1280, 128) -> L2."""

    def __init__(self, in_shape: tuple[int, int], out_dim: int = 128) -> None:
        super().__init__(in_shape, hidden_dims=(1280,), out_dim=out_dim, pool="flatten", batch_norm=True)


class CompactProjectionHead(ProjectionHead):
    """fedhar's compact head: flatten -> Linear(S*F, 256) -> ReLU -> Linear(256, 128) -> L2.

    Meant for the compact encoders, whose temporal pooling already keeps ``S*F`` small
    (768 for UTD inertial); for wide inputs use ``pool="mean_s"`` or ``"adaptive"``.
    """

    def __init__(self, in_shape: tuple[int, int], out_dim: int = 128) -> None:
        super().__init__(in_shape, hidden_dims=(256,), out_dim=out_dim, pool="flatten", batch_norm=False)


def build_head(in_shape: tuple[int, int], cfg: HeadConfig) -> ProjectionHead:
    """Build a projection head for encoder output ``in_shape = (S, F)`` from ``cfg``."""
    return ProjectionHead(
        in_shape,
        hidden_dims=cfg.hidden_dims,
        out_dim=cfg.out_dim,
        pool=cfg.pool,
        pool_size=cfg.pool_size,
        batch_norm=cfg.batch_norm,
        normalize=cfg.normalize,
    )
