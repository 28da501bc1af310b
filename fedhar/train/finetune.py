"""Stage 2: Cosmo's iterative fusion learning, alternating encoder and classifier phases.

The encoders start from stage 1 and the fusion classifier from scratch. Training
alternates ``t_iter`` epochs that update ONLY the encoders (classifier frozen) and
``t_iter`` epochs that update ONLY the classifier (encoders frozen) until the epoch budget
is spent. A frozen part has ``requires_grad = False``, is not in the phase's optimizer
step, and is in eval mode (BatchNorm running statistics and dropout fixed), so its
parameters and buffers are bit-identical across the phase. Each part keeps its own Adam
state across its phases; both follow the same step lr schedule over global epochs.
On CUDA the frozen part's RNNs run without cuDNN, whose RNN backward refuses eval mode
(the encoders' gradients flow back through the frozen classifier's GRU).
(Cosmo's public code switches train/eval modes but updates both parts all the time.)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import nn

from fedhar.data.dataset import HARDataset
from fedhar.train.augment import build_augmenter
from fedhar.train.batches import to_tensors
from fedhar.train.config import FinetuneConfig
from fedhar.train.device import on_device
from fedhar.train.history import EpochRecord, History
from fedhar.train.loop import (
    StepFn,
    build_optimizer,
    epoch_bar,
    evaluate_into,
    finish_epoch,
    lr_at,
    run_epoch,
    set_lr,
)
from fedhar.train.modulation import modulation_coefficients, scale_encoder_grads, unimodal_confidences
from fedhar.train.seeding import seed_everything

if TYPE_CHECKING:
    from fedhar.models import FusionClassifierModel

__all__ = ["Phase", "finetune_iterative", "frozen_rnns_without_cudnn", "phase_of_epoch", "set_phase"]

logger = logging.getLogger(__name__)

Phase = Literal["encoders", "classifier"]
STAGE = "finetune"


def phase_of_epoch(epoch: int, t_iter: int, first: Phase = "encoders") -> Phase:
    """Which part trains during 0-based ``epoch``: blocks of ``t_iter`` epochs alternate."""
    other: Phase = "classifier" if first == "encoders" else "encoders"
    return first if (epoch // t_iter) % 2 == 0 else other


def set_phase(model: nn.Module, phase: Phase, encoders_eval: bool = False) -> None:
    """Unfreeze and train-mode ``model.<phase>``; freeze and eval-mode the other part.

    ``encoders_eval``: in the encoder phase, keep the encoders in eval mode (BatchNorm
    running statistics and dropout fixed) although their weights train.

    Raises
    ------
    ValueError
        If ``model`` lacks an ``encoders`` or ``classifier`` submodule.
    """
    encoders, classifier = _parts(model)
    trainable, frozen = (encoders, classifier) if phase == "encoders" else (classifier, encoders)
    frozen.requires_grad_(False)
    frozen.eval()
    trainable.requires_grad_(True)
    trainable.train(not (encoders_eval and phase == "encoders"))


def finetune_iterative(
    model: FusionClassifierModel | nn.Module,
    data: HARDataset,
    cfg: FinetuneConfig,
    seed: int,
    eval_data: HARDataset | None = None,
    progress: bool | None = None,
    device: str | torch.device | None = None,
) -> History:
    """Iterative fusion learning on the labeled set (Cosmo stage 2).

    Defaults (:class:`FinetuneConfig`): Adam lr 1e-3, lr x0.9 at epochs 350/400/450, batch
    16, 500 epochs, ``t_iter = 5``. With ``cfg.gradient_modulation`` the encoder phase
    scales a dominant modality's encoder gradients down (:mod:`fedhar.train.modulation`).
    ``cfg.encoder_mode`` decides whether the encoder phases re-estimate BatchNorm
    statistics (``"train"``), keep stage 1's (``"bn_eval"``) or never run (``"frozen"``).

    Parameters
    ----------
    model
        A fusion classifier with ``encoders: nn.ModuleDict`` (modality -> encoder) and
        ``classifier`` (``classifier(features) -> logits``); ``model(batch) -> logits``.
    data
        Labeled samples with the encoders' modalities.
    cfg
        Budget, optimizer, schedule, ``t_iter``, evaluation period, modulation.
    seed
        Seeds shuffling and dropout.
    eval_data
        Test set evaluated every ``cfg.eval_every`` epochs and at the last epoch; never
        used for training or selection.
    progress
        Show a tqdm bar (default: ``cfg.progress``).
    device
        Train (and evaluate) on this device; the model moves back afterwards (see
        :func:`fedhar.train.pretrain.pretrain`). ``None``: where the model is.

    Returns
    -------
    History
        One record per epoch, ``phase`` = the part trained. On return every parameter
        has ``requires_grad = True`` and the model is in train mode.
    """
    encoders, classifier = _parts(model)
    _warn_orphans(model, encoders, classifier)
    seed_everything(seed)
    rng = np.random.default_rng(seed)
    augment = build_augmenter(cfg.augment)
    criterion = nn.CrossEntropyLoss()
    history = History(STAGE)
    with on_device(model, device) as target:
        tensors = to_tensors(data, [m for m in data.modalities if m in encoders], device=target)
        optimizers = {"encoders": build_optimizer(encoders.parameters(), cfg.optim),
                      "classifier": build_optimizer(classifier.parameters(), cfg.optim)}
        bar = epoch_bar(cfg.epochs, STAGE, cfg.progress if progress is None else progress)
        try:
            for epoch in bar:
                started = time.perf_counter()
                phase = ("classifier" if cfg.encoder_mode == "frozen"
                         else phase_of_epoch(epoch, cfg.t_iter, cfg.first_phase))
                set_phase(model, phase, encoders_eval=cfg.encoder_mode == "bn_eval")
                lr = lr_at(cfg.optim, epoch)
                set_lr(optimizers[phase], lr)
                frozen = classifier if phase == "encoders" else encoders
                with frozen_rnns_without_cudnn(frozen) if target.type == "cuda" else nullcontext():
                    loss = run_epoch(_make_step(model, optimizers[phase], criterion, cfg, phase), tensors,
                                     cfg.batch_size, rng, augment=augment)
                record = EpochRecord(epoch + 1, STAGE, loss, lr, 0.0, phase=phase)
                evaluate_into(record, model, eval_data, epoch + 1, cfg.epochs, cfg.eval_every)
                finish_epoch(history, record, started, bar, cfg.log_every)
        finally:
            model.requires_grad_(True)
            model.train()
    return history


@contextmanager
def frozen_rnns_without_cudnn(module: nn.Module) -> Iterator[None]:
    """Run the eval-mode RNNs inside ``module`` without cuDNN for the block.

    cuDNN's RNN backward only works in train mode, but in the encoder phase the frozen
    (eval-mode) classifier's GRU must pass gradients back to the encoders. Without cuDNN
    PyTorch's own RNN kernels run, with the same eval-mode semantics (no inter-layer
    dropout); the rest of the model keeps cuDNN. :func:`finetune_iterative` applies it on
    CUDA only (the CPU never uses cuDNN).
    """
    saved: list[bool] = []

    def disable(rnn: nn.Module, _args: tuple[Any, ...]) -> None:
        saved.append(torch.backends.cudnn.enabled)
        if not rnn.training:
            torch.backends.cudnn.enabled = False

    def restore(_rnn: nn.Module, _args: tuple[Any, ...], _output: Any) -> None:
        torch.backends.cudnn.enabled = saved.pop()

    handles = []
    for rnn in (m for m in module.modules() if isinstance(m, nn.RNNBase)):
        handles.append(rnn.register_forward_pre_hook(disable))
        handles.append(rnn.register_forward_hook(restore, always_call=True))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _make_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, criterion: nn.Module, cfg: FinetuneConfig, phase: Phase
) -> StepFn:
    """One optimisation step of ``phase`` (with gradient modulation in the encoder phase if configured)."""
    encoders, classifier = _parts(model)
    modulate = cfg.gradient_modulation and phase == "encoders"

    def step(inputs: dict[str, torch.Tensor], labels: torch.Tensor) -> float:
        optimizer.zero_grad(set_to_none=True)
        if modulate:
            features = {m: encoders[m](x) for m, x in inputs.items()}
            loss = criterion(classifier(features), labels)
            loss.backward()
            confidences = unimodal_confidences(classifier, features, labels)
            scale_encoder_grads(encoders, modulation_coefficients(confidences, cfg.modulation_alpha))
        else:
            loss = criterion(model(inputs), labels)
            loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def _parts(model: nn.Module) -> tuple[nn.ModuleDict, nn.Module]:
    """``(model.encoders, model.classifier)``, checked."""
    encoders = getattr(model, "encoders", None)
    classifier = getattr(model, "classifier", None)
    if not isinstance(encoders, nn.ModuleDict) or not isinstance(classifier, nn.Module):
        raise ValueError(  # noqa: TRY004 - callers and tests catch ValueError for a model without the two parts
            f"iterative fusion learning needs a model with `encoders: nn.ModuleDict` and `classifier: nn.Module`, "
            f"got {type(model).__name__} with encoders={type(encoders).__name__}, "
            f"classifier={type(classifier).__name__}"
        )
    return encoders, classifier


def _warn_orphans(model: nn.Module, encoders: nn.Module, classifier: nn.Module) -> None:
    """Warn about parameters in neither part: iterative fine-tuning never trains them."""
    owned = {id(p) for p in encoders.parameters()} | {id(p) for p in classifier.parameters()}
    orphans = [n for n, p in model.named_parameters() if id(p) not in owned]
    if orphans:
        logger.warning("parameters outside encoders/classifier are never trained: %s", orphans)
