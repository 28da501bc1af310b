"""Cosmo stage 2: quality-guided attention over modality features and the fusion classifier."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from fedhar.models.config import ClassifierConfig, Fusion


def _prior_tensor(modalities: tuple[str, ...], prior: Mapping[str, float] | None) -> Tensor:
    """Modality -> weight as a ``(M,)`` tensor summing to 1 (uniform when ``prior`` is None)."""
    if prior is None:
        return torch.full((len(modalities),), 1.0 / len(modalities))
    if set(prior) != set(modalities):
        raise ValueError(f"qom_prior must have exactly the modalities {modalities}, got {sorted(prior)}")
    values = torch.tensor([float(prior[m]) for m in modalities])
    if not torch.isfinite(values).all() or (values < 0).any() or values.sum() <= 0:
        raise ValueError(f"qom_prior weights must be finite, >= 0 and not all 0, got {dict(prior)}")
    return values / values.sum()


class QualityGuidedAttention(nn.Module):
    """Per-sample modality weights from attention, pulled towards the QoM prior.

    Cosmo (Ouyang et al., MobiCom 2022), Sec. 5.1: for modality features ``z_j``
    ``(B, S, F_j)``, ``mu_j = tanh(W_j z_j + b_j)`` (one Linear per modality over F,
    shared over S) and the score ``e_j = mean_{s, f}(mu_j * z_j)``: the dot product
    ``mu_j . z_j`` per step, divided by ``F_j`` so modalities of different widths are
    comparable, then averaged over the S steps. ``beta_attn = softmax_j(e_j)``,
    ``beta_j = (1 - lambda) beta_attn_j + lambda beta_QoM_j``, renormalised to sum 1.

    Modalities missing from a batch get weight 0; the others share the weight (softmax
    and prior restricted to them). A single modality gets ``beta = 1``.

    Parameters
    ----------
    feature_shapes
        Modality -> encoder output shape ``(S, F_j)``; the order fixes the columns of beta.
    qom_prior
        Modality -> QoM weight (normalised here); ``None``: uniform until
        :meth:`set_qom_prior`. Kept as a non-persistent buffer: it is per-client state,
        computed locally, and must not be averaged by federated aggregation.
    lambda_
        Weight of the prior (Cosmo: 0.8).
    """

    qom_prior: Tensor  # (M,) buffer, registered in __init__

    def __init__(
        self,
        feature_shapes: Mapping[str, tuple[int, int]],
        qom_prior: Mapping[str, float] | None = None,
        lambda_: float = 0.8,
    ) -> None:
        super().__init__()
        if not feature_shapes:
            raise ValueError("feature_shapes is empty; give modality -> (S, F)")
        if not 0.0 <= lambda_ <= 1.0:
            raise ValueError(f"lambda_ must be in [0, 1], got {lambda_}; Cosmo uses 0.8")
        self.modalities = tuple(feature_shapes)
        self.feature_shapes = {m: (int(s), int(f)) for m, (s, f) in feature_shapes.items()}
        self.lambda_ = lambda_
        self.proj = nn.ModuleDict({m: nn.Linear(f, f) for m, (_, f) in self.feature_shapes.items()})
        self.register_buffer("qom_prior", _prior_tensor(self.modalities, qom_prior), persistent=False)

    def set_qom_prior(self, qom_prior: Mapping[str, float]) -> None:
        """Replace the QoM prior (modality -> weight, normalised here)."""
        self.qom_prior.copy_(_prior_tensor(self.modalities, qom_prior))

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        """Modality weights ``beta`` ``(B, M)`` (columns in ``modalities`` order, rows sum to 1)."""
        present = [m for m in self.modalities if m in features]
        unknown = sorted(set(features) - set(self.modalities))
        if unknown or not present:
            raise ValueError(f"features must hold some of {self.modalities} and nothing else, got {sorted(features)}")
        ref = features[present[0]]
        scores = torch.stack(
            [(torch.tanh(self.proj[m](features[m])) * features[m]).mean(dim=(1, 2)) for m in present], dim=1
        )  # (B, M_present)
        attn = torch.softmax(scores, dim=1)
        idx = [self.modalities.index(m) for m in present]
        prior = self.qom_prior[idx].to(ref.dtype)
        prior = prior / prior.sum() if prior.sum() > 0 else torch.full_like(prior, 1.0 / len(idx))
        mixed = (1 - self.lambda_) * attn + self.lambda_ * prior[None]  # (B, M_present)
        mixed = mixed / mixed.sum(dim=1, keepdim=True)
        beta = ref.new_zeros(ref.shape[0], len(self.modalities))
        beta[:, idx] = mixed
        return beta


class AttentionFusionClassifier(nn.Module):
    """Quality-guided attention fusion, a GRU over the S axis and an MLP (Cosmo's classifier).

    Cosmo, Sec. 5.1-5.2 and its UTD code: SumAttn ``sum_j beta_j z_j`` (equal shapes)
    or ConcatAttn ``[beta_1 z_1, ..., beta_M z_M]`` along F; a ``gru_layers``-layer GRU
    (hidden ``gru_hidden``) over the S steps; flatten (``S * gru_hidden``, 16 * 120 =
    1920); MLP ``1920 -> 1280 -> 128 -> K`` with BatchNorm and ReLU.

    In concat mode a modality missing from the batch contributes zeros to its slot, so a
    client lacking a sensor can still use the shared classifier.

    Parameters
    ----------
    feature_shapes
        Modality -> ``(S, F_j)``; all ``S`` equal; for ``"sum"`` all shapes equal.
    num_classes
        Number of classes ``K``.
    qom_prior
        Modality -> QoM weight, see :class:`QualityGuidedAttention`.
    lambda_
        Weight of the QoM prior (Cosmo: 0.8).
    fusion
        ``"concat"`` or ``"sum"``.
    gru_hidden, gru_layers
        GRU size (Cosmo: 120, 2).
    mlp_hidden
        Hidden MLP widths (Cosmo: 1280, 128).
    batch_norm
        BatchNorm1d after each hidden MLP layer.
    dropout
        Dropout after each hidden MLP layer.

    Raises
    ------
    ValueError
        For bad sizes or ``fusion``, unequal ``S``, unequal shapes with ``"sum"``, and (in
        ``forward``) features of the wrong shape or unknown modalities.

    Examples
    --------
    >>> clf = AttentionFusionClassifier({"inertial": (16, 472), "skeleton": (16, 168)}, num_classes=27)
    >>> logits = clf({"inertial": torch.randn(4, 16, 472), "skeleton": torch.randn(4, 16, 168)})
    >>> logits.shape
    torch.Size([4, 27])
    """

    def __init__(
        self,
        feature_shapes: Mapping[str, tuple[int, int]],
        num_classes: int,
        qom_prior: Mapping[str, float] | None = None,
        lambda_: float = 0.8,
        fusion: Fusion = "concat",
        gru_hidden: int = 120,
        gru_layers: int = 2,
        mlp_hidden: tuple[int, ...] = (1280, 128),
        batch_norm: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if fusion not in ("concat", "sum"):
            raise ValueError(f"fusion must be 'concat' or 'sum', got {fusion!r}")
        if gru_hidden < 1 or gru_layers < 1 or any(h < 1 for h in mlp_hidden):
            raise ValueError(f"sizes must be positive, got gru {gru_hidden}x{gru_layers}, mlp {mlp_hidden}")
        self.attention = QualityGuidedAttention(feature_shapes, qom_prior, lambda_)
        shapes = self.attention.feature_shapes
        steps = {s for s, _ in shapes.values()}
        if len(steps) != 1:
            raise ValueError(f"all modalities need the same S to fuse, got {shapes}; use encoders with equal last channels")
        if fusion == "sum" and len(set(shapes.values())) != 1:
            raise ValueError(f"fusion 'sum' needs equal feature shapes, got {shapes}; use fusion='concat'")
        self.fusion = fusion
        self.num_classes = num_classes
        self.steps = steps.pop()
        width = next(iter(shapes.values()))[1] if fusion == "sum" else sum(f for _, f in shapes.values())
        self.gru = nn.GRU(width, gru_hidden, gru_layers, batch_first=True)
        layers: list[nn.Module] = []
        in_dim = self.steps * gru_hidden
        for h in mlp_hidden:
            layers.append(nn.Linear(in_dim, h))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(nn.ReLU(inplace=True))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            in_dim = h
        layers.append(nn.Linear(in_dim, num_classes))
        self.mlp = nn.Sequential(*layers)
        self.last_beta: Tensor | None = None

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modalities, in fusion order."""
        return self.attention.modalities

    def set_qom_prior(self, qom_prior: Mapping[str, float]) -> None:
        """Replace the QoM prior (modality -> weight)."""
        self.attention.set_qom_prior(qom_prior)

    def fuse(self, features: Mapping[str, Tensor]) -> Tensor:
        """Attention-weighted fused sequence ``(B, S, F_fused)``."""
        for m, z in features.items():
            expected = self.attention.feature_shapes.get(m)
            if expected is not None and (z.ndim != 3 or tuple(z.shape[1:]) != expected):
                raise ValueError(f"features[{m!r}] must be (B, {expected[0]}, {expected[1]}), got {tuple(z.shape)}")
        beta = self.attention(features)  # (B, M); validates the keys
        self.last_beta = beta.detach()
        ref = next(iter(features.values()))
        parts = []
        for j, m in enumerate(self.modalities):
            if m in features:
                parts.append(beta[:, j, None, None] * features[m])  # (B, S, F_j)
            elif self.fusion == "concat":
                parts.append(ref.new_zeros(ref.shape[0], *self.attention.feature_shapes[m]))
        return torch.stack(parts).sum(0) if self.fusion == "sum" else torch.cat(parts, dim=2)

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        """Logits ``(B, K)`` from modality -> features ``(B, S, F_j)``."""
        out, _ = self.gru(self.fuse(features))  # (B, S, H)
        return self.mlp(out.reshape(out.shape[0], -1))  # (B, K)


def build_fusion_classifier(
    feature_shapes: Mapping[str, tuple[int, int]],
    num_classes: int,
    cfg: ClassifierConfig,
    qom_prior: Mapping[str, float] | None = None,
) -> AttentionFusionClassifier:
    """Build the stage-2 classifier from ``cfg``."""
    return AttentionFusionClassifier(
        feature_shapes,
        num_classes,
        qom_prior=qom_prior,
        lambda_=cfg.lambda_,
        fusion=cfg.fusion,
        gru_hidden=cfg.gru_hidden,
        gru_layers=cfg.gru_layers,
        mlp_hidden=cfg.mlp_hidden,
        batch_norm=cfg.batch_norm,
        dropout=cfg.dropout,
    )
