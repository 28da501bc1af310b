"""Confidence-driven gradient modulation for multimodal encoders (after DCDP-HAR / OGM-GE).

DCDP-HAR (arXiv 2507.02826) scales a modality branch's gradients down when that branch is
already more confident than the others, so the weaker modality keeps learning. fedhar's
simple version, used during the encoder phase of iterative fusion learning:

1. unimodal confidence ``s_m``: the mean softmax probability of the true class when the
   fusion classifier sees modality ``m`` only (the other modalities' features zeroed),
   computed without gradients;
2. dominance ``r_m = s_m / mean_{j != m} s_j``;
3. coefficient ``k_m = 1 - tanh(alpha * (r_m - 1))`` if ``r_m > 1``, else ``1``
   (as in OGM-GE, Peng et al., CVPR 2022), clamped to ``[0, 1]``;
4. every gradient of modality ``m``'s encoder is multiplied by ``k_m`` before the step.

With ``alpha = 0`` or equally confident modalities nothing changes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

__all__ = ["modulation_coefficients", "scale_encoder_grads", "unimodal_confidences"]


def modulation_coefficients(confidences: Mapping[str, float], alpha: float) -> dict[str, float]:
    """Gradient scale ``k_m`` per modality from unimodal confidences ``s_m`` (module docstring).

    Parameters
    ----------
    confidences
        Modality -> mean true-class probability in ``[0, 1]``.
    alpha
        Modulation strength, ``>= 0``.

    Returns
    -------
    dict[str, float]
        Modality -> coefficient in ``[0, 1]``; all 1 for a single modality.

    Raises
    ------
    ValueError
        If ``alpha < 0``.
    """
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    if len(confidences) < 2:
        return {m: 1.0 for m in confidences}
    coeffs = {}
    for m, s in confidences.items():
        others = [v for k, v in confidences.items() if k != m]
        mean_others = sum(others) / len(others)
        ratio = s / mean_others if mean_others > 0 else math.inf
        coeffs[m] = 1.0 if ratio <= 1 else max(0.0, 1.0 - math.tanh(alpha * (ratio - 1.0)))
    return coeffs


@torch.no_grad()
def unimodal_confidences(
    classifier: nn.Module, features: Mapping[str, torch.Tensor], labels: torch.Tensor
) -> dict[str, float]:
    """Mean true-class probability of ``classifier`` seeing one modality's features at a time.

    Parameters
    ----------
    classifier
        Fusion classifier ``classifier(features) -> logits (B, K)``.
    features
        Modality -> encoder features (detached here); the others are replaced by zeros.
    labels
        ``(B,)`` true classes.
    """
    out = {}
    for m in features:
        solo = {k: (v.detach() if k == m else torch.zeros_like(v)) for k, v in features.items()}
        probs = classifier(solo).softmax(dim=1)
        out[m] = float(probs.gather(1, labels[:, None]).mean())
    return out


def scale_encoder_grads(encoders: nn.ModuleDict | Mapping[str, nn.Module], coefficients: Mapping[str, float]) -> None:
    """Multiply the gradients of ``encoders[m]`` by ``coefficients[m]`` in place."""
    for m, k in coefficients.items():
        if k == 1.0:
            continue
        for p in encoders[m].parameters():
            if p.grad is not None:
                p.grad.mul_(k)
