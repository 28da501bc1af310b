"""The torch device a run trains on: parse and check the ``device`` setting, move a model there and back."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from fedhar.errors import ConfigError

__all__ = ["AUTO", "DEVICE_CHOICES", "device_name", "model_device", "on_device", "resolve_device"]

AUTO = "auto"
DEVICE_CHOICES = ("cpu", "cuda", "cuda:N", AUTO)
"""Accepted spellings of the ``device`` setting (``N`` a CUDA device index)."""

_CUDA = re.compile(r"cuda(?::(\d+))?")
_CONFIG_KEY = "device"


def resolve_device(name: str | torch.device = "cpu") -> torch.device:
    """The torch device a ``device`` setting names, checked against this machine.

    ``"cpu"`` (the default) is bit-reproducible: a seeded run gives the same weights on
    every run. CUDA runs are not bit-identical to CPU runs (other kernels, another
    dropout generator) and may differ slightly between runs (non-deterministic cuDNN
    and atomic-add kernels).

    Parameters
    ----------
    name
        ``"cpu"``, ``"cuda"`` (the current CUDA device), ``"cuda:N"``, or ``"auto"``
        (``"cuda"`` if CUDA is available, else ``"cpu"``); case and surrounding spaces
        are ignored. A ``torch.device`` is checked the same way.

    Returns
    -------
    torch.device
        ``cpu``, or ``cuda:N`` with an explicit index (so results can name it).

    Raises
    ------
    ConfigError
        For an unknown name, CUDA requested on a machine without it, or a CUDA index
        beyond the visible devices.

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    text = str(name).strip().lower()
    if text == "cpu":
        return torch.device("cpu")
    if text == AUTO:
        return resolve_device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    match = _CUDA.fullmatch(text)
    if match is None:
        raise ConfigError(f"unknown device {str(name)!r}; choose one of {DEVICE_CHOICES}", _CONFIG_KEY)
    if not torch.cuda.is_available():
        raise ConfigError(
            f"device {str(name)!r} needs CUDA, but torch.cuda.is_available() is False here (torch "
            f"{torch.__version__}, built for CUDA {torch.version.cuda}); use device=cpu, or device=auto "
            "to fall back to the CPU",
            _CONFIG_KEY,
        )
    count = torch.cuda.device_count()
    index = torch.cuda.current_device() if match.group(1) is None else int(match.group(1))
    if index >= count:
        raise ConfigError(
            f"device {str(name)!r} names CUDA device {index}, but only {count} are visible "
            f"(indices 0..{count - 1}); check CUDA_VISIBLE_DEVICES",
            _CONFIG_KEY,
        )
    return torch.device("cuda", index)


def device_name(device: torch.device) -> str | None:
    """The GPU's product name for a CUDA device (``torch.cuda.get_device_name``); ``None`` for the CPU."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else None


def model_device(model: nn.Module) -> torch.device:
    """Where ``model``'s first parameter (or buffer) lives; the CPU for a module without any."""
    for tensor in model.parameters():
        return tensor.device
    for buffer in model.buffers():
        return buffer.device
    return torch.device("cpu")


@contextmanager
def on_device(model: nn.Module, device: str | torch.device | None) -> Iterator[torch.device]:
    """Move ``model`` to ``device`` for the block, then back to where it was (also on error).

    Parameters and buffers keep their identity (``nn.Module.to`` swaps their data), so
    modules shared with another model, or parameters an outer optimizer holds, stay
    shared. A model built on the CPU comes back on the CPU, ready to be serialised.

    Parameters
    ----------
    model
        The model to move.
    device
        A ``device`` setting (see :func:`resolve_device`); ``None``: leave the model where
        it is.

    Yields
    ------
    torch.device
        The device the model is on inside the block.
    """
    home = model_device(model)
    target = home if device is None else resolve_device(device)
    if target == home:
        yield target
        return
    model.to(target)
    try:
        yield target
    finally:
        model.to(home)
