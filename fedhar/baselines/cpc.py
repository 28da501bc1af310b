"""CPC: contrastive predictive coding for IMU streams (van den Oord et al., 2018; Haresamudram et al., 2021)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedhar.baselines.blocks import check_batch, sort_specs
from fedhar.baselines.config import CPCConfig
from fedhar.data.dataset import ModalitySpec
from fedhar.losses import Objective

__all__ = ["CPCClassifier", "CPCLoss", "CPCModel", "cpc_objective"]


class CPCModel(nn.Module):
    """CPC encoder g_enc (1-D convs, z_t), autoregressive GRU g_ar (c_t) and predictors W_k.

    Haresamudram, Essa and Ploetz, "Contrastive Predictive Coding for Human Activity
    Recognition", IMWUT 5(2), 2021, after van den Oord, Li and Vinyals, "Representation
    Learning with Contrastive Predictive Coding", arXiv:1807.03748. Cosmo (Ouyang et al.,
    MobiCom 2022) reports CPC on USC-HAD.

    Several IMU modalities (USC-HAD "acc" and "gyro") are one multichannel stream: their
    channels are concatenated in sorted-name order (acc x/y/z, then gyro x/y/z), as the
    CPC-for-HAR paper feeds accelerometer and gyroscope together (6 channels). They must
    share the number of time steps T.

    Parameters
    ----------
    specs
        One ``(T, C)`` modality spec, or several with the same T.
    cfg
        Architecture settings (paper values by default).

    Raises
    ------
    ValueError
        For a non-IMU spec, different T, or ``prediction_steps >= T``.

    Examples
    --------
    >>> specs = [ModalitySpec("acc", (200, 3), 100.0), ModalitySpec("gyro", (200, 3), 100.0)]
    >>> model = CPCModel(specs)
    >>> z, c = model({"acc": torch.randn(4, 200, 3), "gyro": torch.randn(4, 200, 3)})
    >>> z.shape, c.shape, model.predict(c).shape
    (torch.Size([4, 200, 128]), torch.Size([4, 200, 256]), torch.Size([4, 200, 28, 128]))
    """

    def __init__(self, specs: ModalitySpec | Iterable[ModalitySpec], cfg: CPCConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or CPCConfig()
        self.specs = sort_specs(specs)
        shapes = {s.name: s.shape for s in self.specs}
        if any(len(shape) != 2 for shape in shapes.values()):
            raise ValueError(f"CPC takes IMU modalities of shape (T, C), got {shapes}")
        lengths = {shape[0] for shape in shapes.values()}
        if len(lengths) != 1:
            raise ValueError(f"CPC modalities must share T to be concatenated, got {shapes}")
        self.length = lengths.pop()
        if cfg.prediction_steps >= self.length:
            raise ValueError(f"prediction_steps={cfg.prediction_steps} must be < T={self.length}; predict fewer steps")
        self.cfg = cfg
        blocks: list[nn.Module] = []
        in_channels = sum(shape[1] for shape in shapes.values())
        for out_channels in cfg.conv_channels:
            blocks += [
                nn.Conv1d(in_channels, out_channels, cfg.kernel_size, padding=cfg.kernel_size // 2,
                          padding_mode="reflect", bias=False),
                nn.ReLU(),
                nn.Dropout(cfg.dropout),
            ]
            in_channels = out_channels
        self.encoder = nn.Sequential(*blocks)
        self.latent_dim = in_channels
        self.context = nn.GRU(
            self.latent_dim, cfg.gru_hidden, cfg.gru_layers,
            batch_first=True, dropout=cfg.dropout if cfg.gru_layers > 1 else 0.0,
        )
        # The K predictors W_1..W_K stacked in one Linear: output block k-1 is W_k c_t.
        self.predictors = nn.Linear(cfg.gru_hidden, cfg.prediction_steps * self.latent_dim)

    @property
    def modality_names(self) -> tuple[str, ...]:
        """Modality names in the fixed (sorted) channel order."""
        return tuple(s.name for s in self.specs)

    def encode(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Latents z ``(B, T, D)``; ``ValueError`` on a wrong modality set or shape."""
        check_batch(batch, self.specs)
        x = torch.cat([batch[name] for name in self.modality_names], dim=2)  # (B, T, C)
        return self.encoder(x.transpose(1, 2)).transpose(1, 2)

    def forward(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Latents z ``(B, T, D)`` and causal contexts c ``(B, T, H)`` (c_t sees z_1..z_t only)."""
        z = self.encode(batch)
        c, _ = self.context(z)
        return z, c

    def predict(self, c: Tensor) -> Tensor:
        """Predictions ``W_k c_t`` of z_{t+k}, ``(B, T, K, D)`` for k = 1..K."""
        return self.predictors(c).unflatten(-1, (self.cfg.prediction_steps, self.latent_dim))


class CPCLoss(nn.Module):
    """InfoNCE of CPC, averaged over horizons k = 1..K, anchor steps t and samples.

    For every anchor t with t + k inside the window, the score of candidate z is
    ``f_k = exp(z^T W_k c_t)``; the positive is z_{t+k} of the same sample, the negatives
    are z_{t+k} of the other B - 1 samples of the batch (van den Oord et al., 2018,
    Eq. 4; Haresamudram et al., 2021). Unlike Haresamudram et al., who draw one random
    anchor t per batch, every valid t is used (computed in one batched product per k).
    Each horizon k weighs equally. A batch of one sample has no negatives and loss 0.

    Examples
    --------
    >>> z, pred = torch.randn(8, 50, 128), torch.randn(8, 50, 12, 128)
    >>> loss = CPCLoss()(z, pred)
    """

    def forward(self, z: Tensor, predictions: Tensor) -> Tensor:
        """Loss of latents ``z (B, T, D)`` and predictions ``(B, T, K, D)``; a scalar.

        Raises
        ------
        ValueError
            If the shapes do not match or K >= T.
        """
        if z.ndim != 3 or predictions.ndim != 4 or predictions.shape[:2] != z.shape[:2] or \
                predictions.shape[3] != z.shape[2] or predictions.shape[2] >= z.shape[1]:
            raise ValueError(
                f"need z (B, T, D) and predictions (B, T, K, D) with K < T, got {tuple(z.shape)} "
                f"and {tuple(predictions.shape)}"
            )
        batch, length, dim = z.shape
        horizons = predictions.shape[2]
        # future[b, t, k-1] = z[b, t + k] (zeros past the window end, masked below): one strided view
        # instead of K slices, whose backward passes would each zero-fill a full-size gradient.
        padded = torch.cat([z, z.new_zeros(batch, horizons, dim)], dim=1)
        future = padded.unfold(1, horizons + 1, 1)[:, :length, :, 1:].permute(0, 1, 3, 2)  # (B, T, K, D)
        scores = torch.einsum("btkd,ctkd->ktbc", predictions, future)  # (K, T, B, B)
        targets = torch.arange(batch, device=z.device).expand(horizons, length, batch)
        nll = F.cross_entropy(scores.reshape(-1, batch), targets.reshape(-1), reduction="none")
        steps = torch.arange(length, device=z.device)
        ks = torch.arange(1, horizons + 1, device=z.device)
        valid = (steps[None, :] < length - ks[:, None]).to(nll.dtype)  # (K, T): t + k inside the window
        per_horizon = (nll.view(horizons, length, batch) * valid[:, :, None]).sum(dim=(1, 2)) / (
            (length - ks).to(nll.dtype) * batch)
        return per_horizon.mean()


def cpc_objective(loss: CPCLoss | None = None) -> Objective:
    """Stage-1 objective ``objective(model: CPCModel, batch) -> scalar`` (``loss(z, model.predict(c))``).

    Parameters
    ----------
    loss
        The loss; ``CPCLoss()`` if ``None``.
    """
    loss_fn = loss if loss is not None else CPCLoss()

    def objective(model: nn.Module, batch: Mapping[str, Tensor]) -> Tensor:
        z, c = model(batch)
        return loss_fn(z, model.predict(c))  # type: ignore[operator]

    return objective


class CPCClassifier(nn.Module):
    """Fine-tuning model: a (pretrained) :class:`CPCModel` and an MLP on its context.

    As in Haresamudram et al. (2021), the classifier reads c_T, the context at the last
    step (or the mean over t, ``cfg.pooling``), through Linear-BN-ReLU-Dropout blocks
    (256, 128) and a final Linear. ``encoder`` is the CPC model (its predictors unused):
    freeze it for the paper's "last layer" schedule, train it too for "all layers".

    Parameters
    ----------
    cpc_model
        The pretrained model; its modalities are this classifier's.
    num_classes
        K, the number of classes.
    cfg
        Classifier settings; ``cpc_model.cfg`` if ``None``.

    Raises
    ------
    ValueError
        If ``num_classes < 1``.
    """

    def __init__(self, cpc_model: CPCModel, num_classes: int, cfg: CPCConfig | None = None) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        cfg = cfg or cpc_model.cfg
        self.encoder = cpc_model
        self.pooling = cfg.pooling
        layers: list[nn.Module] = []
        width = cpc_model.cfg.gru_hidden
        for hidden in cfg.classifier_hidden:
            layers += [nn.Linear(width, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(cfg.dropout)]
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.classifier = nn.Sequential(*layers)

    @property
    def modality_names(self) -> tuple[str, ...]:
        """Modalities the model takes."""
        return self.encoder.modality_names

    def freeze_encoder(self, frozen: bool = True) -> None:
        """Stop (or restart) gradient updates of the CPC encoder; a frozen encoder runs in eval mode."""
        self.encoder.requires_grad_(not frozen)
        self.encoder.train(self.training and not frozen)

    def train(self, mode: bool = True) -> CPCClassifier:
        """Set train/eval mode; a frozen encoder stays in eval mode (no dropout)."""
        super().train(mode)
        if not any(p.requires_grad for p in self.encoder.parameters()):
            self.encoder.eval()
        return self

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Map ``{modality: (B, T, C)}`` to logits ``(B, K)``."""
        _, c = self.encoder(batch)  # (B, T, H)
        pooled = c[:, -1] if self.pooling == "last" else c.mean(dim=1)
        return self.classifier(pooled)
