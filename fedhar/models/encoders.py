"""Per-modality feature encoders: Cosmo's 2-D (IMU) and 3-D (skeleton) conv stacks."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from fedhar.data.dataset import ModalitySpec
from fedhar.models.config import ConvStackConfig, EncoderConfig

# By number of convolved axes (1: temporal (C, T), 2: grid (T, C), 3: (T, J, 3)); typed
# loosely: the kernel tuple's length matches it at run time.
_CONV: dict[int, Callable[..., nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_BATCH_NORM = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_MAX_POOL = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}
_ADAPTIVE_POOL = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}


class MeanMaxPool(nn.Module):
    """``(B, S, T)`` -> ``(B, S, 2)``: the mean and the maximum over time of every channel."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([x.mean(dim=-1), x.amax(dim=-1)], dim=-1)


class ConvEncoder(nn.Module):
    """A stack of Conv-BatchNorm-ReLU(-Dropout) blocks over one time-first modality.

    Cosmo (Ouyang et al., MobiCom 2022), Sec. 4 / public UTD code: each block is
    ``Conv -> BatchNorm -> ReLU`` with dropout after all blocks but the last. In Cosmo's
    ``grid`` layout the input ``(B, *input_shape)`` gets a singleton channel axis, the output
    ``(B, S, *spatial)`` is reshaped to sequence features ``(B, S, F)`` with ``S`` the
    last block's channels and ``F`` the product of the remaining axes. In the ``temporal``
    layout (IMU) the C sensor axes are the channels of 1-D convolutions over time; with
    ``pooling="mean_max"`` the two remaining features of each channel are its mean and its
    maximum over time: ``(B, S, 2)``.

    Parameters
    ----------
    input_shape
        Shape of one sample, time first: ``(T, C)`` (2-D conv) or ``(T, J, 3)`` (3-D conv).
    cfg
        The conv stack; its kernel rank must equal ``len(input_shape)``.

    Raises
    ------
    ValueError
        If the kernel rank does not match ``input_shape`` or the input is too small for
        the kernels and pools.

    Examples
    --------
    >>> enc = ConvEncoder((120, 6), EncoderConfig().imu)
    >>> enc(torch.randn(4, 120, 6)).shape
    torch.Size([4, 16, 472])
    """

    def __init__(self, input_shape: tuple[int, ...], cfg: ConvStackConfig) -> None:
        super().__init__()
        rank = len(input_shape)
        if rank not in (2, 3) or cfg.input_rank != rank:
            raise ValueError(
                f"input shape {input_shape} needs a stack for rank-{rank} samples, got kernels {cfg.kernels} "
                f"(layout {cfg.layout!r}); use the imu stack for (T, C) and the skeleton stack for (T, J, 3)"
            )
        self.input_shape = tuple(input_shape)
        self.magnitude = bool(cfg.magnitude)
        self.temporal = cfg.layout == "temporal"
        if self.magnitude and (rank != 2 or input_shape[1] % 3):
            raise ValueError(f"magnitude channels need IMU input (T, C) with C in (x, y, z) triads, got {input_shape}")
        ndim = cfg.ndim
        layers: list[nn.Module] = []
        in_channels = self._with_magnitude(torch.zeros(1, *self.input_shape)).shape[-1] if self.temporal else 1
        last = len(cfg.channels) - 1
        for i, (channels, kernel) in enumerate(zip(cfg.channels, cfg.kernels, strict=True)):
            layers += [
                _CONV[ndim](in_channels, channels, kernel, padding=cfg.padding),
                _BATCH_NORM[ndim](channels),
                nn.ReLU(inplace=True),
            ]
            if cfg.pools and any(p > 1 for p in cfg.pools[i]):
                layers.append(_MAX_POOL[ndim](cfg.pools[i]))
            if i < last and cfg.dropout > 0:
                layers.append(nn.Dropout(cfg.dropout))
            in_channels = channels
        if cfg.out_size is not None:
            layers.append(_ADAPTIVE_POOL[ndim](cfg.out_size))
        if cfg.pooling == "mean_max":
            layers.append(MeanMaxPool())
        self.features = nn.Sequential(*layers)
        self.out_shape: tuple[int, int] = self._infer_out_shape()

    def _infer_out_shape(self) -> tuple[int, int]:
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                out = self.features(self._layout(torch.zeros(1, *self.input_shape)))
        except RuntimeError as err:
            raise ValueError(
                f"input shape {self.input_shape} is too small for this conv stack ({err}); "
                "use smaller kernels/pools or 'same' padding"
            ) from err
        finally:
            self.train(was_training)
        return int(out.shape[1]), int(out[0, 0].numel())

    def forward(self, x: Tensor) -> Tensor:
        """Map ``(B, *input_shape)`` to sequence features ``(B, S, F)``."""
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"encoder expects input of shape (B, {', '.join(map(str, self.input_shape))}), "
                f"got {tuple(x.shape)}"
            )
        out = self.features(self._layout(x))
        return out.reshape(out.shape[0], out.shape[1], -1)

    def _layout(self, x: Tensor) -> Tensor:
        """The convolutions' input: ``(B, C, T)`` (temporal) or ``(B, 1, *input_shape)`` (grid)."""
        x = self._with_magnitude(x)
        return x.transpose(1, 2) if self.temporal else x.unsqueeze(1)

    def _with_magnitude(self, x: Tensor) -> Tensor:
        """``(B, T, C)`` -> ``(B, T, C + C / 3)`` with each triad's norm appended (when ``magnitude`` is on)."""
        if not self.magnitude:
            return x
        b, t, c = x.shape
        norms = x.reshape(b, t, c // 3, 3).norm(dim=-1)
        return torch.cat([x, norms], dim=-1)


class ImuEncoder(ConvEncoder):
    """Cosmo's IMU encoder: 2-D convs over ``(B, 1, T, C)`` (``(120, 6)`` -> ``(16, 472)``)."""


class SkeletonEncoder(ConvEncoder):
    """Cosmo's skeleton encoder: 3-D convs over ``(B, 1, T, J, 3)`` (``(40, 20, 3)`` -> ``(16, 168)``)."""


def build_encoder(spec: ModalitySpec, cfg: EncoderConfig) -> ConvEncoder:
    """Build the encoder of one modality from its spec.

    Parameters
    ----------
    spec
        The modality; ``spec.shape`` of rank 2 ``(T, C)`` picks the IMU family, rank 3
        ``(T, J, 3)`` the skeleton family.
    cfg
        Encoder settings (variant, channels, kernels, dropout, pooling).

    Returns
    -------
    ConvEncoder
        An :class:`ImuEncoder` or :class:`SkeletonEncoder` with ``out_shape == (S, F)``.

    Raises
    ------
    ValueError
        If ``spec.shape`` is neither rank 2 nor rank 3.
    """
    shape = tuple(spec.shape)
    if len(shape) == 2:
        return ImuEncoder(shape, cfg.imu_stack)
    if len(shape) == 3:
        return SkeletonEncoder(shape, cfg.skeleton)  # type: ignore[arg-type]
    raise ValueError(
        f"modality {spec.name!r} has shape {shape}; expected (T, C) for IMU or (T, J, 3) for skeleton"
    )


def encoder_out_shape(encoder: nn.Module) -> tuple[int, int]:
    """The sequence-feature shape ``(S, F)`` of an encoder built by :func:`build_encoder`.

    Encoders reach the models through ``nn.ModuleDict`` (typed ``nn.Module``); this reads
    their ``out_shape`` with a clear error for a module that is not such an encoder.
    """
    shape = getattr(encoder, "out_shape", None)
    if not (isinstance(shape, tuple) and len(shape) == 2):
        raise ValueError(f"encoder {type(encoder).__name__} has no out_shape (S, F); build it with build_encoder")
    return int(shape[0]), int(shape[1])
