"""DeepSense supervised fusion baseline (Yao et al., WWW 2017), time-domain variant."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from torch import Tensor, nn

from fedhar.baselines.blocks import IntervalConvEncoder, check_batch, sort_specs, stack_intervals
from fedhar.baselines.config import DeepSenseConfig
from fedhar.data.dataset import ModalitySpec

__all__ = ["DeepSenseModel"]


class DeepSenseModel(nn.Module):
    """DeepSense: individual convs per sensor, merge convs across sensors, stacked GRU, output.

    Following Yao et al., "DeepSense: A Unified Deep Learning Framework for Time-Series
    Mobile Sensing Data Processing", WWW 2017, as used as a baseline by Cosmo (Ouyang
    et al., MobiCom 2022). Differences from the paper: the input is the raw time series
    (no per-interval FFT), and each interval's individual-conv output is averaged over
    time rather than flattened (see :class:`~fedhar.baselines.blocks.IntervalConvEncoder`).

    Per interval t = 1..tau, the M modality features (M, F) are stacked as a one-channel
    image; the first merge conv has kernel (M, k_1) and spans all modalities, the next
    ones (1, k_i). The flattened merge output feeds a stacked GRU whose outputs are
    averaged over the intervals and mapped to logits by one linear layer.

    Parameters
    ----------
    specs
        The modalities, each ``(T, C)`` (IMU) or ``(T, J, 3)`` (skeleton, J*3 channels);
        they are used in sorted-name order. Any number >= 1.
    num_classes
        K, the number of classes.
    cfg
        Architecture settings (paper values by default).

    Raises
    ------
    ValueError
        For no spec, duplicate names, ``num_classes < 1`` or too many intervals.

    Examples
    --------
    >>> specs = [ModalitySpec("acc", (200, 3), 100.0), ModalitySpec("gyro", (200, 3), 100.0)]
    >>> model = DeepSenseModel(specs, num_classes=12)
    >>> model({"acc": torch.randn(4, 200, 3), "gyro": torch.randn(4, 200, 3)}).shape
    torch.Size([4, 12])
    """

    def __init__(
        self, specs: Iterable[ModalitySpec], num_classes: int, cfg: DeepSenseConfig | None = None
    ) -> None:
        super().__init__()
        cfg = cfg or DeepSenseConfig()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.specs = sort_specs(specs)
        self.cfg = cfg
        self.encoders = nn.ModuleDict(
            {
                s.name: IntervalConvEncoder(
                    s, cfg.num_intervals, cfg.conv_channels, cfg.individual_kernel_size,
                    cfg.num_individual_layers, cfg.dropout,
                )
                for s in self.specs
            }
        )
        num_modalities = len(self.specs)
        width = cfg.conv_channels
        layers: list[nn.Module] = []
        for i, kernel in enumerate(cfg.merge_kernel_sizes):
            rows = num_modalities if i == 0 else 1
            layers += [
                nn.Conv2d(1 if i == 0 else cfg.conv_channels, cfg.conv_channels, (rows, kernel)),
                nn.BatchNorm2d(cfg.conv_channels),
                nn.ReLU(),
                nn.Dropout(cfg.dropout),
            ]
            width -= kernel - 1
        self.merge = nn.Sequential(*layers)
        self.gru = nn.GRU(
            cfg.conv_channels * width, cfg.gru_hidden, cfg.gru_layers,
            batch_first=True, dropout=cfg.dropout if cfg.gru_layers > 1 else 0.0,
        )
        self.output = nn.Linear(cfg.gru_hidden, num_classes)

    @property
    def modality_names(self) -> tuple[str, ...]:
        """Modality names in the fixed (sorted) order."""
        return tuple(s.name for s in self.specs)

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Map ``{modality: (B, *shape)}`` to logits ``(B, K)``; ``ValueError`` on a wrong modality set."""
        check_batch(batch, self.specs)
        features = stack_intervals(self.encoders, batch, self.modality_names)  # (B, tau, M, F)
        b, tau, m, f = features.shape
        merged = self.merge(features.reshape(b * tau, 1, m, f))  # (B * tau, channels, 1, W)
        hidden, _ = self.gru(merged.reshape(b, tau, -1))  # (B, tau, H)
        return self.output(hidden.mean(dim=1))
