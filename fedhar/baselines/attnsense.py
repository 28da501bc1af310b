"""AttnSense supervised fusion baseline (Ma et al., IJCAI 2019), time-domain variant."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from fedhar.baselines.blocks import IntervalConvEncoder, check_batch, sort_specs, stack_intervals
from fedhar.baselines.config import AttnSenseConfig
from fedhar.data.dataset import ModalitySpec

__all__ = ["AdditiveAttention", "AttnSenseModel"]


class AdditiveAttention(nn.Module):
    """Additive attention pooling: ``a_i = softmax_i(v^T tanh(W x_i + b))``, ``out = sum_i a_i x_i``.

    Parameters
    ----------
    features
        Size of each item x_i.
    hidden
        Size of the scoring layer.
    """

    def __init__(self, features: int, hidden: int) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Linear(features, hidden), nn.Tanh(), nn.Linear(hidden, 1, bias=False))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(..., N, F)`` -> pooled ``(..., F)`` and weights ``(..., N)`` (summing to 1 over N)."""
        weights = torch.softmax(self.score(x).squeeze(-1), dim=-1)
        return (weights.unsqueeze(-1) * x).sum(dim=-2), weights


class AttnSenseModel(nn.Module):
    """AttnSense: per-sensor convs, attention over sensors per step, GRU, attention over time.

    Following Ma et al., "AttnSense: Multi-level Attention Mechanism For Multimodal Human
    Activity Recognition", IJCAI 2019, as used as a baseline by Cosmo (Ouyang et al.,
    MobiCom 2022). Differences from the paper: raw time series instead of per-interval
    spectrograms, and each interval's conv output is averaged over its time steps.

    For interval t with modality features f_{m,t} (F,), the sensor attention gives
    ``alpha_{m,t} = softmax_m(v^T tanh(W f_{m,t} + b))`` and the fused feature
    ``sum_m alpha_{m,t} f_{m,t}``; a GRU runs over t = 1..tau, and the temporal attention
    pools its outputs h_t the same way before one linear output layer.

    Parameters
    ----------
    specs
        The modalities, each ``(T, C)`` or ``(T, J, 3)``; used in sorted-name order.
    num_classes
        K, the number of classes.
    cfg
        Architecture settings.

    Raises
    ------
    ValueError
        For no spec, duplicate names, ``num_classes < 1`` or too many intervals.

    Examples
    --------
    >>> specs = [ModalitySpec("inertial", (120, 6), 50.0), ModalitySpec("skeleton", (40, 20, 3), 30.0)]
    >>> model = AttnSenseModel(specs, num_classes=27)
    >>> batch = {"inertial": torch.randn(4, 120, 6), "skeleton": torch.randn(4, 40, 20, 3)}
    >>> logits, sensor_w, time_w = model.forward_with_attention(batch)
    >>> logits.shape, sensor_w.shape, time_w.shape
    (torch.Size([4, 27]), torch.Size([4, 10, 2]), torch.Size([4, 10]))
    """

    def __init__(
        self, specs: Iterable[ModalitySpec], num_classes: int, cfg: AttnSenseConfig | None = None
    ) -> None:
        super().__init__()
        cfg = cfg or AttnSenseConfig()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.specs = sort_specs(specs)
        self.cfg = cfg
        self.encoders = nn.ModuleDict(
            {
                s.name: IntervalConvEncoder(
                    s, cfg.num_intervals, cfg.conv_channels, cfg.kernel_size, cfg.num_conv_layers, cfg.dropout
                )
                for s in self.specs
            }
        )
        self.sensor_attention = AdditiveAttention(cfg.conv_channels, cfg.attention_dim)
        self.gru = nn.GRU(
            cfg.conv_channels, cfg.gru_hidden, cfg.gru_layers,
            batch_first=True, dropout=cfg.dropout if cfg.gru_layers > 1 else 0.0,
        )
        self.temporal_attention = AdditiveAttention(cfg.gru_hidden, cfg.attention_dim)
        self.output = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(cfg.gru_hidden, num_classes))

    @property
    def modality_names(self) -> tuple[str, ...]:
        """Modality names in the fixed (sorted) order."""
        return tuple(s.name for s in self.specs)

    def forward_with_attention(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Logits ``(B, K)``, sensor weights ``(B, tau, M)`` (sorted order) and time weights ``(B, tau)``."""
        check_batch(batch, self.specs)
        features = stack_intervals(self.encoders, batch, self.modality_names)  # (B, tau, M, F)
        fused, sensor_weights = self.sensor_attention(features)  # (B, tau, F), (B, tau, M)
        hidden, _ = self.gru(fused)  # (B, tau, H)
        pooled, time_weights = self.temporal_attention(hidden)  # (B, H), (B, tau)
        return self.output(pooled), sensor_weights, time_weights

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Map ``{modality: (B, *shape)}`` to logits ``(B, K)``; ``ValueError`` on a wrong modality set."""
        return self.forward_with_attention(batch)[0]
