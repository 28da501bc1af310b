"""CMC: contrastive multiview coding across modalities (Tian et al., 2019), a stage-1 objective."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedhar.losses import AugmentationConfig, Objective, UnimodalContrastiveLoss, unimodal_objective

__all__ = ["CMCLoss", "cmc_objective", "cmc_or_unimodal_objective", "cross_view_info_nce"]


def cross_view_info_nce(anchor: Tensor, candidates: Tensor, temperature: float) -> Tensor:
    """InfoNCE of one view against another: anchor i's positive is candidate i.

    ``L = -1/B sum_i log( exp(a_i . c_i / tau) / sum_j exp(a_i . c_j / tau) )``
    (Tian et al., 2019, Eq. 2, with the batch as the negative set).

    Parameters
    ----------
    anchor, candidates
        ``(B, D)`` normalised embeddings of the same B samples in two views.
    temperature
        tau > 0.
    """
    logits = anchor @ candidates.T / temperature  # (B, B)
    targets = torch.arange(anchor.shape[0], device=anchor.device)
    return F.cross_entropy(logits, targets)


class CMCLoss(nn.Module):
    """Symmetric cross-modal InfoNCE over every pair of modalities ("full graph" CMC).

    Tian, Krishnan and Isola, "Contrastive Multiview Coding", arXiv:1906.05849 (ECCV 2020),
    used as a baseline by Cosmo (Ouyang et al., MobiCom 2022). For the L2-normalised
    projections z^m of M >= 2 modalities,

    ``L = 1 / (M (M - 1)) * sum_{m != n} InfoNCE(z^m -> z^n)``

    where in InfoNCE(z^m -> z^n) anchor z^m_i has the positive z^n_i (same sample, other
    modality) and the negatives z^n_j, j != i (other samples in that modality). Averaging
    over ordered pairs makes the loss symmetric in the modalities.

    Parameters
    ----------
    temperature
        tau > 0 (Cosmo's CMC code: 0.07).

    Raises
    ------
    ValueError
        If ``temperature <= 0``.

    Examples
    --------
    >>> loss_fn = CMCLoss(temperature=0.07)
    >>> u, s = F.normalize(torch.randn(8, 128), dim=1), F.normalize(torch.randn(8, 128), dim=1)
    >>> loss = loss_fn({"inertial": u, "skeleton": s})
    """

    def __init__(self, temperature: float = 0.07) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}; try 0.07")
        self.temperature = temperature

    def forward(self, projections: Mapping[str, Tensor]) -> Tensor:
        """Loss of ``{modality: (B, D)}`` projections (re-normalised here); a scalar.

        Raises
        ------
        ValueError
            With fewer than two modalities, or projections of different shapes.
        """
        if len(projections) < 2:
            raise ValueError(
                f"CMC needs at least two modalities, got {sorted(projections)}; "
                "use cmc_or_unimodal_objective for a single-modality client"
            )
        names = sorted(projections)
        shapes = {name: tuple(projections[name].shape) for name in names}
        first = shapes[names[0]]
        if len(first) != 2 or any(shape != first for shape in shapes.values()):
            raise ValueError(f"every projection must be the same (B, D) shape, got {shapes}")
        z = {name: F.normalize(projections[name], dim=1) for name in names}
        losses = [
            cross_view_info_nce(z[m], z[n], self.temperature) for m, n in itertools.permutations(names, 2)
        ]
        return torch.stack(losses).mean()


def cmc_objective(loss: CMCLoss | None = None) -> Objective:
    """Stage-1 CMC objective for a :class:`fedhar.models.ContrastiveFusionModel`.

    The returned ``objective(model, batch)`` computes ``loss(model(batch))``, where
    ``model(batch)`` gives ``{modality: (B, D)}`` projections. Fine-tuning afterwards uses
    Cosmo's stage-2 classifier without the QoM prior (the pipeline's job).

    Parameters
    ----------
    loss
        The loss to apply; ``CMCLoss()`` (temperature 0.07) if ``None``.
    """
    loss_fn = loss if loss is not None else CMCLoss()

    def objective(model: nn.Module, batch: Mapping[str, Tensor]) -> Tensor:
        return loss_fn(model(batch))

    return objective


def cmc_or_unimodal_objective(
    generator: torch.Generator,
    cmc_loss: CMCLoss | None = None,
    unimodal_loss: UnimodalContrastiveLoss | None = None,
    augmentation: AugmentationConfig | None = None,
) -> Objective:
    """CMC for batches with >= 2 modalities, the unimodal NT-Xent fallback otherwise (federated clients).

    Parameters
    ----------
    generator
        Seeded CPU generator driving the fallback's augmentations.
    cmc_loss
        The CMC loss; ``CMCLoss()`` if ``None``.
    unimodal_loss, augmentation
        Passed to :func:`fedhar.losses.unimodal_objective`.
    """
    cmc = cmc_objective(cmc_loss)
    unimodal = unimodal_objective(generator, unimodal_loss, augmentation)

    def objective(model: nn.Module, batch: Mapping[str, Tensor]) -> Tensor:
        return cmc(model, batch) if len(batch) >= 2 else unimodal(model, batch)

    return objective
