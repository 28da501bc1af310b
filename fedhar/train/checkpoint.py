"""Checkpoints: model, optimizer, scheduler and epoch saved atomically, loaded back."""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fedhar.errors import FedharError

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "atomic_save_state",
    "atomic_write_bytes",
    "atomic_write_text",
    "load_checkpoint",
    "save_checkpoint",
]


class CheckpointError(FedharError):
    """A checkpoint file is missing, unreadable, or does not fit the model."""


@dataclass(frozen=True)
class Checkpoint:
    """What :func:`load_checkpoint` read back: the epoch and any extra payload."""

    epoch: int
    extra: dict[str, Any]


def atomic_write_bytes(path: str | Path, payload: bytes) -> Path:
    """Write ``payload`` to a temporary file beside ``path``, then ``os.replace`` it into place."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def atomic_write_text(path: str | Path, text: str) -> Path:
    """UTF-8 text version of :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_state(state: Mapping[str, torch.Tensor], path: str | Path) -> Path:
    """``torch.save`` a state dict atomically (a reader never sees half a file)."""
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    epoch: int,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Save a training state atomically (a crash never leaves a half-written file).

    Parameters
    ----------
    path
        Target file (parents are created).
    model
        Its ``state_dict`` (parameters and buffers) is saved as CPU tensors, whatever
        device the model is on, so the file loads on a machine without a GPU.
    epoch
        Number of finished epochs.
    optimizer, scheduler
        Saved when given (``state_dict``).
    extra
        Any picklable payload (config, history), returned by :func:`load_checkpoint`.

    Returns
    -------
    Path
        ``path``.
    """
    weights = model.state_dict()
    for name, tensor in weights.items():  # in place: keeps the state dict's version metadata
        weights[name] = tensor.cpu()
    state: dict[str, Any] = {"model": weights, "epoch": int(epoch), "extra": dict(extra or {})}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    tmp_dir = Path(path).parent
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=tmp_dir, prefix=f".{Path(path).name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(path)


def load_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    strict: bool = True,
) -> Checkpoint:
    """Load a state written by :func:`save_checkpoint` into ``model`` (and optimizer/scheduler).

    Raises
    ------
    CheckpointError
        If the file is missing or unreadable, the state does not fit the model, or an
        optimizer/scheduler state was asked for but not saved.
    """
    target = Path(path)
    if not target.is_file():
        raise CheckpointError("checkpoint file not found; train first or fix the path", target)
    try:
        state = torch.load(target, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"], strict=strict)
    except (RuntimeError, KeyError, OSError, EOFError) as err:
        raise CheckpointError(f"cannot restore the model from this checkpoint: {err}", target) from err
    for name, obj in (("optimizer", optimizer), ("scheduler", scheduler)):
        if obj is None:
            continue
        if name not in state:
            raise CheckpointError(f"no {name} state saved in this checkpoint", target)
        obj.load_state_dict(state[name])
    return Checkpoint(epoch=int(state["epoch"]), extra=dict(state.get("extra", {})))
