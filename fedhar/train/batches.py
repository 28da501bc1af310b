"""HARDataset -> torch mini-batches: dict of modality tensors plus labels, seeded shuffling."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fedhar.data.dataset import HARDataset

__all__ = ["Batch", "TensorData", "group_batches", "iterate_batches", "num_batches", "to_tensors"]

Batch = tuple[dict[str, torch.Tensor], torch.Tensor]
"""``(inputs, labels)``: modality -> ``(B, *shape)`` float32, and ``(B,)`` int64 labels."""


@dataclass(frozen=True)
class TensorData:
    """The arrays of a :class:`HARDataset` as torch tensors, converted once.

    Parameters
    ----------
    inputs
        Modality -> ``(N, *shape)`` float32 tensor.
    labels
        ``(N,)`` int64 tensor.
    """

    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def device(self) -> torch.device:
        """Where the tensors live."""
        return self.labels.device

    def to(self, device: torch.device) -> TensorData:
        """The tensors on ``device``, copied once (``self`` when they are already there)."""
        if self.labels.device == device and all(t.device == device for t in self.inputs.values()):
            return self
        return TensorData({m: t.to(device) for m, t in self.inputs.items()}, self.labels.to(device))


def to_tensors(
    data: HARDataset | TensorData,
    modalities: Sequence[str] | None = None,
    device: torch.device | None = None,
) -> TensorData:
    """Convert (without copying where possible) a dataset's arrays to tensors.

    Parameters
    ----------
    data
        The dataset (a :class:`TensorData` is returned as is, restricted to ``modalities``
        and moved to ``device``).
    modalities
        Keep only these modalities (default: all present).
    device
        Copy the tensors to this device once, so batches are indexed there (default:
        leave them on the CPU, sharing the arrays' memory).

    Returns
    -------
    TensorData
        The tensors.

    Raises
    ------
    KeyError
        If a requested modality is not in ``data``.
    """
    if isinstance(data, TensorData):
        kept = data if modalities is None else TensorData({m: data.inputs[m] for m in modalities}, data.labels)
        return kept if device is None else kept.to(device)
    names = data.modalities if modalities is None else tuple(modalities)
    missing = [m for m in names if m not in data.data]
    if missing:
        raise KeyError(f"modalities {missing} not in the dataset view {data.modalities}")
    inputs = {m: torch.from_numpy(np.ascontiguousarray(data.data[m], dtype=np.float32)) for m in names}
    tensors = TensorData(inputs, torch.from_numpy(np.ascontiguousarray(data.labels, dtype=np.int64)))
    return tensors if device is None else tensors.to(device)


def num_batches(num_samples: int, batch_size: int, drop_last: bool) -> int:
    """Number of batches one epoch yields (a drop-last epoch of a small set keeps one batch)."""
    if drop_last and num_samples >= batch_size:
        return num_samples // batch_size
    return -(-num_samples // batch_size)


def group_batches(groups: np.ndarray, batch_size: int, rng: np.random.Generator,
                  drop_last: bool = False) -> list[np.ndarray]:
    """One epoch's batches of sample indices, each batch from one group (e.g. one subject).

    Each group is shuffled and cut into batches of ``batch_size`` (its incomplete last batch
    dropped with ``drop_last`` unless the group is smaller than a batch), then the batches
    of all groups are visited in a random order: what each federated client's local batches
    are, drawn centrally.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    groups = np.asarray(groups)
    batches: list[np.ndarray] = []
    for group in np.unique(groups):
        members = rng.permutation(np.flatnonzero(groups == group))
        for b in range(num_batches(len(members), batch_size, drop_last)):
            batches.append(members[b * batch_size : (b + 1) * batch_size])
    return [batches[i] for i in rng.permutation(len(batches))]


def iterate_batches(
    data: TensorData,
    batch_size: int,
    *,
    shuffle: bool,
    rng: np.random.Generator | None = None,
    drop_last: bool = False,
    groups: np.ndarray | None = None,
) -> Iterator[Batch]:
    """Yield the mini-batches of one epoch.

    Parameters
    ----------
    data
        The tensors; batches are indexed on their device.
    batch_size
        Samples per batch.
    shuffle
        Visit the samples in a random order drawn from ``rng``.
    rng
        Source of the permutation (required when ``shuffle``): the caller owns it, so a
        seeded run shuffles identically on every device.
    drop_last
        Drop the last incomplete batch. When the dataset is smaller than ``batch_size``
        the single (incomplete) batch is kept, so an epoch never yields nothing.
    groups
        ``(N,)`` group of each sample (needs ``shuffle``): every batch is drawn from one
        group (:func:`group_batches`).

    Yields
    ------
    Batch
        ``(inputs, labels)``.

    Raises
    ------
    ValueError
        If ``batch_size < 1``, or ``shuffle`` without ``rng``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(data)
    if groups is not None:
        if not shuffle or rng is None:
            raise ValueError("batches by group are drawn at random: groups needs shuffle=True and an rng")
        if len(groups) != n:
            raise ValueError(f"groups has {len(groups)} entries for {n} samples")
        batches = [torch.from_numpy(b).to(data.device) for b in group_batches(groups, batch_size, rng, drop_last)]
    else:
        if shuffle:
            if rng is None:
                raise ValueError("shuffle=True needs an rng (np.random.Generator) for reproducible order")
            order = torch.from_numpy(rng.permutation(n)).to(data.device)
        else:
            order = torch.arange(n, device=data.device)
        batches = [order[b * batch_size : (b + 1) * batch_size] for b in range(num_batches(n, batch_size, drop_last))]
    for idx in batches:
        yield {m: t.index_select(0, idx) for m, t in data.inputs.items()}, data.labels.index_select(0, idx)
