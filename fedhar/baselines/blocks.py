"""Building blocks shared by the baselines: modality-set checks and per-interval convolutions."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedhar.data.dataset import ModalitySpec

__all__ = ["IntervalConvEncoder", "check_batch", "flatten_channels", "sort_specs", "stack_intervals"]


def sort_specs(specs: ModalitySpec | Iterable[ModalitySpec]) -> tuple[ModalitySpec, ...]:
    """Return the specs sorted by name: the fixed modality order every baseline uses.

    Raises
    ------
    ValueError
        If there is no spec or two share a name.
    """
    specs = (specs,) if isinstance(specs, ModalitySpec) else tuple(specs)
    names = [s.name for s in specs]
    if not specs or len(set(names)) != len(names):
        raise ValueError(f"need at least one modality spec with distinct names, got {names}")
    return tuple(sorted(specs, key=lambda s: s.name))


def check_batch(batch: Mapping[str, Tensor], specs: Sequence[ModalitySpec]) -> None:
    """Check that ``batch`` holds exactly the modalities of ``specs``, each ``(B, *spec.shape)``.

    Raises
    ------
    ValueError
        Naming the expected and the received modality sets, or both shapes.
    """
    expected = sorted(s.name for s in specs)
    got = sorted(batch)
    if got != expected:
        raise ValueError(f"expected modalities {expected}, got {got}")
    sizes = set()
    for spec in specs:
        x = batch[spec.name]
        if tuple(x.shape[1:]) != tuple(spec.shape):
            raise ValueError(
                f"modality {spec.name!r}: expected shape (B, {', '.join(map(str, spec.shape))}), got {tuple(x.shape)}"
            )
        sizes.add(x.shape[0])
    if len(sizes) > 1:
        raise ValueError(f"modalities have different batch sizes {sorted(sizes)}")


def flatten_channels(x: Tensor) -> Tensor:
    """``(B, T, *rest)`` -> ``(B, T, prod(rest))``: skeleton ``(B, T, J, 3)`` becomes ``(B, T, 3J)``."""
    return x.reshape(x.shape[0], x.shape[1], -1)


class IntervalConvEncoder(nn.Module):
    """Per-modality ("individual") convolutions applied to each time interval.

    The sequence ``(B, T, C)`` (skeleton joints flattened into C) is cut into
    ``num_intervals`` equal intervals, as DeepSense (Yao et al., WWW 2017) cuts its input
    into tau intervals; when T is not a multiple of tau it is first linearly resampled
    to the next multiple. Each interval goes through ``num_layers`` blocks
    ``Conv1d -> BatchNorm -> ReLU -> Dropout`` over its own time steps, with weights
    shared across intervals, and is averaged over those steps (DeepSense flattens instead;
    averaging gives every modality the same feature size, which the merge and attention
    layers need).

    Parameters
    ----------
    spec
        The modality; ``spec.shape`` is ``(T, C)`` or ``(T, J, 3)``.
    num_intervals
        tau; must be <= T.
    channels
        Filters per layer, the output feature size.
    kernel_size
        Convolution kernel (odd sizes keep the interval length; even ones are padded too).
    num_layers
        Number of convolution blocks.
    dropout
        Dropout probability after each block.

    Raises
    ------
    ValueError
        If ``num_intervals`` exceeds the modality's T.
    """

    def __init__(
        self, spec: ModalitySpec, num_intervals: int, channels: int, kernel_size: int, num_layers: int, dropout: float
    ) -> None:
        super().__init__()
        length = spec.shape[0]
        if num_intervals > length:
            raise ValueError(
                f"num_intervals={num_intervals} exceeds the {length} time steps of modality {spec.name!r}; "
                "use fewer intervals"
            )
        self.num_intervals = num_intervals
        self.interval_length = math.ceil(length / num_intervals)
        in_channels = math.prod(spec.shape[1:])
        layers: list[nn.Module] = []
        for i in range(num_layers):
            layers += [
                nn.Conv1d(in_channels if i == 0 else channels, channels, kernel_size, padding="same"),
                nn.BatchNorm1d(channels),
                nn.ReLU(),
                nn.Dropout(dropout),
            ]
        self.convs = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, T, *rest)`` -> interval features ``(B, num_intervals, channels)``."""
        x = flatten_channels(x)
        batch, length, chans = x.shape
        target = self.num_intervals * self.interval_length
        if length != target:
            x = F.interpolate(x.transpose(1, 2), size=target, mode="linear", align_corners=True).transpose(1, 2)
        # (B, tau, L, C) -> (B * tau, C, L)
        x = x.reshape(batch * self.num_intervals, self.interval_length, chans).transpose(1, 2)
        features = self.convs(x).mean(dim=2)  # (B * tau, channels)
        return features.reshape(batch, self.num_intervals, -1)


def stack_intervals(encoders: nn.ModuleDict, batch: Mapping[str, Tensor], names: Sequence[str]) -> Tensor:
    """Run each modality's :class:`IntervalConvEncoder`; return ``(B, tau, M, channels)`` in ``names`` order."""
    return torch.stack([encoders[name](batch[name]) for name in names], dim=2)
