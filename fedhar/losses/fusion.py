"""Cosmo's contrastive fusion loss: fusion-based feature augmentation + SupCon over fused views."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

Objective = Callable[[nn.Module, Mapping[str, Tensor]], Tensor]

# Cosmo's fusion weights w = 0.1, 0.2, ..., 0.9 (P = 9 views).
DEFAULT_FUSION_WEIGHTS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(1, 10))
_DEDUPE_DECIMALS = 6


def fusion_weight_matrix(
    num_modalities: int, fusion_weights: Sequence[float] | Sequence[Sequence[float]] = DEFAULT_FUSION_WEIGHTS
) -> Tensor:
    """The ``(P, M)`` matrix of convex weights that builds the fused views.

    Scalars ``w`` (Cosmo's form) give, for each modality ``j``, the weight vector with
    ``w`` on ``j`` and ``(1 - w) / (M - 1)`` on every other modality: points on the
    line from the face opposite vertex ``j`` through the simplex centre (``w = 1/M``)
    towards vertex ``j``, so every modality leads some views. Duplicate rows are dropped,
    so for ``M = 2`` and symmetric scalars (Cosmo's 0.1 … 0.9) this is exactly
    ``[w, 1 - w]`` for each ``w`` (P = 9), and for ``M = 3`` it gives up to ``3 * len(w)``
    views. Rows of length ``M`` are used as given (each must lie on the simplex).

    Parameters
    ----------
    num_modalities
        ``M >= 2``.
    fusion_weights
        Scalars in ``[0, 1]`` or rows of ``M`` non-negative weights summing to 1.

    Returns
    -------
    Tensor
        ``(P, M)`` float64 weights, each row summing to 1 (cast to the projections' dtype
        when used).

    Raises
    ------
    ValueError
        If ``M < 2``, a weight is outside ``[0, 1]``, a row has the wrong length or does
        not sum to 1, or fewer than 2 distinct views remain.
    """
    if num_modalities < 2:
        raise ValueError(
            f"fusion needs at least 2 modalities, got {num_modalities}; "
            "use fedhar.losses.UnimodalContrastiveLoss for a single-modality client"
        )
    if len(fusion_weights) == 0:
        raise ValueError("fusion_weights is empty; give e.g. (0.1, 0.2, ..., 0.9)")
    if isinstance(fusion_weights[0], Sequence):
        rows = torch.tensor([list(r) for r in fusion_weights], dtype=torch.float64)  # type: ignore[arg-type]
        if rows.shape[1] != num_modalities:
            raise ValueError(f"fusion weight rows have {rows.shape[1]} entries but there are {num_modalities} modalities")
        if (rows < 0).any() or not torch.allclose(rows.sum(1), torch.ones(len(rows), dtype=torch.float64)):
            raise ValueError(f"each fusion weight row must be non-negative and sum to 1, got {rows.tolist()}")
    else:
        w = torch.tensor(list(fusion_weights), dtype=torch.float64)  # (W,)
        if ((w < 0) | (w > 1)).any():
            raise ValueError(f"scalar fusion weights must lie in [0, 1], got {list(fusion_weights)}")
        rest = (1 - w) / (num_modalities - 1)  # (W,)
        rows = rest[None, :, None].expand(num_modalities, -1, num_modalities).clone()  # (j, W, M)
        idx = torch.arange(num_modalities)
        rows[idx, :, idx] = w[None, :]
        rows = rows.reshape(-1, num_modalities)  # (M*W, M), modality-major: Cosmo's order for M = 2
    # Drop duplicate rows, keeping first occurrences in order.
    keys = [tuple(r) for r in torch.round(rows, decimals=_DEDUPE_DECIMALS).tolist()]
    keep = [i for i, k in enumerate(keys) if k not in keys[:i]]
    rows = rows[keep]
    if len(rows) < 2:
        raise ValueError(
            f"fusion weights {list(fusion_weights)} give {len(rows)} distinct view(s) for "
            f"{num_modalities} modalities; the loss needs at least 2 positives per sample"
        )
    return rows


def build_fusion_views(projections: Sequence[Tensor], weights: Tensor, normalize: bool = True) -> Tensor:
    """Fusion-based feature augmentation (Cosmo, Sec. 4.2).

    ``v_{b,p} = sum_j W[p, j] * u_{b,j}``, e.g. ``w * u + (1 - w) * s`` for two modalities.

    Parameters
    ----------
    projections
        ``M`` tensors ``(B, D)``, one per modality, in the column order of ``weights``.
    weights
        ``(P, M)`` convex weights (see :func:`fusion_weight_matrix`).
    normalize
        Re-normalise each view to unit length. Cosmo's loss does (it calls
        ``F.normalize`` on the stacked views), so cosine similarities stay in ``[-1, 1]``
        whatever ``w`` is; fedhar keeps that.

    Returns
    -------
    Tensor
        ``(B, P, D)`` views.

    Raises
    ------
    ValueError
        If the projections differ in shape or their number differs from ``weights.shape[1]``.
    """
    if len(projections) != weights.shape[1]:
        raise ValueError(f"got {len(projections)} projections for weights of shape {tuple(weights.shape)}")
    shapes = {tuple(p.shape) for p in projections}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"projections must all have the same shape (B, D), got {[tuple(p.shape) for p in projections]}")
    stacked = torch.stack(list(projections), dim=1)  # (B, M, D)
    views = torch.einsum("pm,bmd->bpd", weights.to(stacked), stacked)  # (B, P, D)
    return nn.functional.normalize(views, dim=-1) if normalize else views


def fusion_contrastive_loss(views: Tensor, temperature: float = 0.07, hard_positive_beta: float = 0.0) -> Tensor:
    """SupCon loss over fused views; the views of one sample are each other's positives.

    Khosla et al., "Supervised Contrastive Learning" (NeurIPS 2020), eq. 2, with the
    sample index as label (Cosmo's ConFusionLoss):

    ``L = 1/N sum_i -sum_{p in P(i)} a_ip log( exp(v_i.v_p / t) / sum_{k != i} exp(v_i.v_k / t) )``

    over all ``N = P * B`` views, ``P(i)`` the other ``P - 1`` views of anchor ``i``'s
    sample. Plain SupCon has ``a_ip = 1 / (P - 1)``. With ``hard_positive_beta > 0``
    (inspired by CLMM's hard-positive weighting) ``a_ip = softmax_{p in P(i)}(-beta *
    v_i.v_p)``: less similar (harder) positives weigh more. The weights are detached,
    so they rescale gradients but are not themselves optimised.

    Parameters
    ----------
    views
        ``(B, P, D)`` views; they should be L2-normalised.
    temperature
        Softmax temperature ``t`` (Cosmo: 0.07).
    hard_positive_beta
        Strength of the hard-positive weighting; 0 is plain SupCon.

    Returns
    -------
    Tensor
        Scalar loss.

    Raises
    ------
    ValueError
        If ``views`` is not 3-D with ``P >= 2``, or ``temperature <= 0``.
    """
    if views.ndim != 3 or views.shape[1] < 2:
        raise ValueError(f"views must be (B, P, D) with P >= 2, got {tuple(views.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    b, p, d = views.shape
    feats = views.transpose(0, 1).reshape(p * b, d)  # (N, D), row p*B + b
    sample = torch.arange(p * b, device=views.device) % b  # (N,)
    self_mask = torch.eye(p * b, dtype=torch.bool, device=views.device)  # (N, N)
    pos_mask = (sample[:, None] == sample[None, :]) & ~self_mask  # (N, N)
    cos = feats @ feats.T  # (N, N)
    logits = (cos / temperature).masked_fill(self_mask, float("-inf"))
    log_prob = (logits - torch.logsumexp(logits, dim=1, keepdim=True)).masked_fill(self_mask, 0.0)
    if hard_positive_beta == 0:
        weight = pos_mask.to(feats.dtype) / (p - 1)  # (N, N)
    else:
        scores = (-hard_positive_beta * cos.detach()).masked_fill(~pos_mask, float("-inf"))
        weight = torch.softmax(scores, dim=1)  # (N, N), zero off the positives
    return -(weight * log_prob).sum(dim=1).mean()


class CosmoFusionLoss(nn.Module):
    """Cosmo's contrastive fusion loss over the projections of several modalities.

    Cosmo (Ouyang et al., MobiCom 2022), Sec. 4.2: the normalised projections of one
    sample are fused into ``P`` views (:func:`build_fusion_views`); a SupCon loss
    (:func:`fusion_contrastive_loss`) pulls the views of a sample together and pushes
    every view of every other sample away.

    Parameters
    ----------
    temperature
        Softmax temperature (Cosmo: 0.07).
    fusion_weights
        Scalars ``w`` (views ``w * u + (1 - w) * s``; Cosmo: 0.1 … 0.9) or explicit
        ``(P, M)`` rows; see :func:`fusion_weight_matrix` for ``M > 2``.
    normalize_views
        Re-normalise the fused views (Cosmo: yes).
    hard_positive_beta
        CLMM-style hard-positive weighting strength; 0 (default) is plain SupCon.
    copies
        Augmented copies of each sample stacked along the batch axis (rows ``[A; B]``, as
        :class:`fedhar.train.AugmentConfig` with ``views=2`` makes them). The fused views
        of all copies of a sample are positives of each other, so the loss also pulls
        together two augmentations of one modality (SimCLR's positives) besides Cosmo's
        fusion mixtures. 1 (default) is Cosmo.

    Raises
    ------
    ValueError
        At construction for a bad hyperparameter; in ``forward`` for fewer than two
        modalities or mismatched projection shapes.

    Examples
    --------
    >>> loss_fn = CosmoFusionLoss()
    >>> u = nn.functional.normalize(torch.randn(8, 128), dim=1)
    >>> s = nn.functional.normalize(torch.randn(8, 128), dim=1)
    >>> loss = loss_fn({"inertial": u, "skeleton": s})
    """

    def __init__(
        self,
        temperature: float = 0.07,
        fusion_weights: Sequence[float] | Sequence[Sequence[float]] = DEFAULT_FUSION_WEIGHTS,
        normalize_views: bool = True,
        hard_positive_beta: float = 0.0,
        copies: int = 1,
    ) -> None:
        super().__init__()
        if copies < 1:
            raise ValueError(f"copies must be >= 1, got {copies}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}; Cosmo uses 0.07")
        if hard_positive_beta < 0:
            raise ValueError(f"hard_positive_beta must be >= 0 (0 = off), got {hard_positive_beta}")
        if len(fusion_weights) == 0:
            raise ValueError("fusion_weights is empty; give e.g. (0.1, 0.2, ..., 0.9)")
        self.temperature = temperature
        scalars = tuple(float(w) for w in fusion_weights if not isinstance(w, Sequence))
        rows = tuple(tuple(float(x) for x in w) for w in fusion_weights if isinstance(w, Sequence))
        if scalars and rows:
            raise ValueError(f"fusion_weights mixes scalars and rows: {list(fusion_weights)}")
        self.fusion_weights: tuple[float, ...] | tuple[tuple[float, ...], ...] = rows or scalars
        self.normalize_views = normalize_views
        self.hard_positive_beta = hard_positive_beta
        self.copies = copies
        if not isinstance(self.fusion_weights[0], tuple):
            fusion_weight_matrix(2, self.fusion_weights)  # validate the scalars now
        self._weights: dict[int, Tensor] = {}

    def weights_for(self, num_modalities: int) -> Tensor:
        """The ``(P, M)`` fusion weights used for ``num_modalities`` modalities."""
        if num_modalities not in self._weights:
            self._weights[num_modalities] = fusion_weight_matrix(num_modalities, self.fusion_weights)
        return self._weights[num_modalities]

    def forward(self, projections: Mapping[str, Tensor]) -> Tensor:
        """Loss of a batch given modality -> normalised projections ``(B, D)`` (mapping order = columns)."""
        if len(projections) < 2:
            raise ValueError(
                f"CosmoFusionLoss needs at least 2 modalities to fuse, got {list(projections)}; "
                "use UnimodalContrastiveLoss / unimodal_objective for a single-modality client"
            )
        weights = self.weights_for(len(projections))
        rows = next(iter(projections.values())).shape[0]
        if rows % self.copies:
            raise ValueError(f"{rows} rows do not split into {self.copies} stacked copies of a batch")
        chunks = zip(*(p.chunk(self.copies) for p in projections.values()))  # per copy: one (B, D) per modality
        views = torch.cat([build_fusion_views(list(c), weights, self.normalize_views) for c in chunks], dim=1)
        return fusion_contrastive_loss(views, self.temperature, self.hard_positive_beta)


def cosmo_objective(loss: CosmoFusionLoss | None = None) -> Objective:
    """The stage-1 objective ``objective(model, batch) -> loss`` for a multimodal model.

    Parameters
    ----------
    loss
        The fusion loss (default: Cosmo's settings).

    Returns
    -------
    Callable
        ``objective(model, batch)`` calls ``model(batch)`` (modality -> ``(B, D)``
        projections) and returns the scalar fusion loss.
    """
    loss_fn = loss or CosmoFusionLoss()

    def objective(model: nn.Module, batch: Mapping[str, Tensor]) -> Tensor:
        return loss_fn(model(batch))

    return objective
