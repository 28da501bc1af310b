"""Helpers for the baseline tests: UTD-MHAD / USC-HAD modality specs, random batches, a one-step trainer."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedhar.data.dataset import ModalitySpec

UTD_SPECS = (ModalitySpec("inertial", (120, 6), 50.0), ModalitySpec("skeleton", (40, 20, 3), 30.0))
USC_SPECS = (ModalitySpec("acc", (200, 3), 100.0), ModalitySpec("gyro", (200, 3), 100.0))
UTD_CLASSES = 27
USC_CLASSES = 12

Batch = dict[str, Tensor]


def make_batch(specs: Sequence[ModalitySpec], batch_size: int, seed: int = 0) -> Batch:
    """Random float32 inputs ``{modality: (B, *shape)}``."""
    gen = torch.Generator().manual_seed(seed)
    return {s.name: torch.randn(batch_size, *s.shape, generator=gen) for s in specs}


def take_train_step(
    model: nn.Module, loss_fn: Callable[[nn.Module], Tensor], lr: float = 0.05
) -> tuple[float, float]:
    """One SGD step; asserts a finite loss and changed parameters; returns (loss, max |dparam|)."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    optimizer = torch.optim.SGD(params, lr=lr)
    optimizer.zero_grad()
    loss = loss_fn(model)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss), f"loss is {loss.item()}"
    change = max((p.detach() - b).abs().max().item() for p, b in zip(params, before, strict=True))
    assert change > 0, "no parameter changed"
    return loss.item(), change


def supervised_loss(batch: Mapping[str, Tensor], labels: Tensor) -> Callable[[nn.Module], Tensor]:
    """Cross-entropy of ``model(batch)`` against ``labels``."""
    return lambda model: F.cross_entropy(model(batch), labels)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())
