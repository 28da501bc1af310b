"""Cosmo stage-1 model: one encoder and one projection head per modality."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from fedhar.data.dataset import ModalitySpec
from fedhar.models.config import ModelConfig
from fedhar.models.encoders import build_encoder, encoder_out_shape
from fedhar.models.heads import build_head


class ContrastiveFusionModel(nn.Module):
    """Encoders and projection heads of Cosmo's contrastive fusion pretraining.

    Cosmo (Ouyang et al., MobiCom 2022), stage 1: every modality ``j`` has an encoder
    ``f_j`` and a head ``g_j``; the projection ``p_j = g_j(f_j(x_j))`` is L2-normalised
    and fed to :class:`fedhar.losses.CosmoFusionLoss`. The state-dict keys are
    ``encoders.<modality>.…`` and ``heads.<modality>.…`` so that a federated strategy
    can aggregate per modality.

    Parameters
    ----------
    specs
        The modalities this model holds (a single-modality client passes one spec).
    cfg
        Encoder and head settings.

    Raises
    ------
    ValueError
        If ``specs`` is empty or holds a modality twice; in ``forward`` if the batch has
        no known modality or an unknown one.

    Examples
    --------
    >>> specs = [ModalitySpec("inertial", (120, 6), 50.0), ModalitySpec("skeleton", (40, 20, 3), 30.0)]
    >>> model = ContrastiveFusionModel(specs, ModelConfig())
    >>> out = model({"inertial": torch.randn(4, 120, 6), "skeleton": torch.randn(4, 40, 20, 3)})
    >>> out["inertial"].shape
    torch.Size([4, 128])
    """

    def __init__(self, specs: Sequence[ModalitySpec], cfg: ModelConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or ModelConfig()
        names = [s.name for s in specs]
        if not names:
            raise ValueError("specs is empty; give at least one ModalitySpec")
        if len(set(names)) != len(names):
            raise ValueError(f"specs name a modality twice: {names}")
        self.specs = tuple(specs)
        self.cfg = cfg
        self.encoders = nn.ModuleDict({s.name: build_encoder(s, cfg.encoder) for s in specs})
        self.heads = nn.ModuleDict({name: build_head(encoder_out_shape(enc), cfg.head) for name, enc in self.encoders.items()})

    @property
    def modalities(self) -> tuple[str, ...]:
        """Names of the modalities, in spec order."""
        return tuple(self.encoders.keys())

    @property
    def feature_shapes(self) -> dict[str, tuple[int, int]]:
        """Modality -> encoder output shape ``(S, F)``."""
        return {name: encoder_out_shape(enc) for name, enc in self.encoders.items()}

    def _present(self, batch: Mapping[str, Tensor]) -> list[str]:
        unknown = sorted(set(batch) - set(self.encoders))
        if unknown:
            raise ValueError(f"batch holds modalities {unknown} this model has no encoder for; it has {self.modalities}")
        present = [m for m in self.encoders if m in batch]
        if not present:
            raise ValueError(f"batch holds none of this model's modalities {self.modalities}")
        return present

    def encode(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Sequence features ``(B, S, F_m)`` of the modalities present in ``batch``."""
        return {m: self.encoders[m](batch[m]) for m in self._present(batch)}

    def forward(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """L2-normalised projections ``(B, D)`` of the modalities present in ``batch``."""
        return {m: self.heads[m](z) for m, z in self.encode(batch).items()}
