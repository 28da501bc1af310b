"""Exceptions raised by fedhar: each carries a ``reason`` and names its culprit."""

from __future__ import annotations

from pathlib import Path


class FedharError(Exception):
    """Base class of fedhar's run-time errors.

    Parameters
    ----------
    reason
        What was expected, what was found, and what happens next or how to fix it.
    culprit
        The thing at fault (a file path, a node id, a config key), if there is one.
    """

    def __init__(self, reason: str, culprit: str | Path | None = None) -> None:
        self.reason = reason
        self.culprit = None if culprit is None else str(culprit)
        super().__init__(f"{self.culprit}: {reason}" if self.culprit else reason)


class DataFormatError(FedharError):
    """A raw data file is unreadable, truncated, lacks a field or holds bad values."""


class DatasetNotFoundError(FedharError):
    """A dataset folder is missing, has the wrong layout, or lacks expected files."""


class ManifestMismatchError(FedharError):
    """A file's SHA-256 does not match the manifest shipped with the package."""


class CacheError(FedharError):
    """A preprocessed-array cache entry is unreadable or inconsistent."""


class ConfigError(FedharError, ValueError):
    """A configuration value is out of range or inconsistent with the data."""


class ModalityMissingError(DatasetNotFoundError):
    """A device's data lacks a modality that the model or the run's config expects."""


class DeploymentError(FedharError):
    """A SuperLink / SuperNode deployment fault: server unreachable, TLS mismatch, node key not registered."""


class ExportError(FedharError):
    """An exported model (TorchScript / ONNX) cannot be built, loaded, or disagrees with the PyTorch model."""


class FederationError(FedharError):
    """A federated step got no usable reply: every node failed or was rejected (see the log per node)."""
