"""Reading raw MATLAB files into validated arrays, and the report of what a load skipped."""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from fedhar.errors import ConfigError, DataFormatError

logger = logging.getLogger(__name__)

_FIX_HINT = "re-download the dataset, or set dataset.skip_bad_files=true to skip such files"


@dataclass(frozen=True)
class SkippedFile:
    """A raw file left out of a dataset, and why."""

    path: str
    reason: str


@dataclass
class LoadReport:
    """What one dataset load read, skipped and where it came from.

    Parameters
    ----------
    dataset
        Dataset name.
    files_read
        Raw files read successfully (0 for a cache hit).
    skipped
        Bad files left out because ``skip_bad_files`` was set.
    too_short
        Trials shorter than one window: valid files that yield no sample.
    from_cache
        Whether the arrays came from the on-disk cache.
    cache_path
        The cache entry read or written, if any.
    seconds
        Wall-clock time of the load.
    """

    dataset: str
    files_read: int = 0
    skipped: list[SkippedFile] = field(default_factory=list)
    too_short: list[str] = field(default_factory=list)
    from_cache: bool = False
    cache_path: str | None = None
    seconds: float = 0.0

    @property
    def num_skipped(self) -> int:
        """Number of bad files skipped."""
        return len(self.skipped)

    def record_skip(self, path: Path | str, reason: str) -> None:
        """Log a warning for a bad file and add it to :attr:`skipped`."""
        logger.warning("%s: skipping %s: %s", self.dataset, path, reason)
        self.skipped.append(SkippedFile(str(path), reason))

    def to_dict(self) -> dict[str, Any]:
        """The content that describes the data (not how it was loaded), for the cache."""
        return {
            "files_read": self.files_read,
            "skipped": [[s.path, s.reason] for s in self.skipped],
            "too_short": list(self.too_short),
        }

    @classmethod
    def from_dict(cls, dataset: str, content: dict[str, Any]) -> LoadReport:
        """Inverse of :meth:`to_dict`."""
        return cls(
            dataset=dataset,
            files_read=int(content["files_read"]),
            skipped=[SkippedFile(str(p), str(r)) for p, r in content["skipped"]],
            too_short=[str(p) for p in content["too_short"]],
        )


def check_subject_filter(subjects: Collection[int] | None, num_subjects: int, dataset: str) -> tuple[int, ...] | None:
    """A reader's subject filter as sorted unique ints (``None``: every subject).

    A deployed device holds only its own subject's files and reads with
    ``subjects=(k,)``; the readers then list, check and read that subject's files only.

    Raises
    ------
    ConfigError
        If the filter is empty or names a subject outside ``1..num_subjects``.
    """
    if subjects is None:
        return None
    wanted = tuple(sorted({int(s) for s in subjects}))
    if not wanted:
        raise ConfigError(f"{dataset}: the subject filter is empty; give at least one subject or None for all",
                          "subjects")
    outside = [s for s in wanted if not 1 <= s <= num_subjects]
    if outside:
        raise ConfigError(f"{dataset} has subjects 1..{num_subjects}; cannot read subjects {outside}", "subjects")
    return wanted


def read_mat_array(path: Path, field_name: str, shape: Sequence[int | None]) -> np.ndarray:
    """Read one numeric field of a MATLAB file and check its shape and values.

    Parameters
    ----------
    path
        The ``.mat`` file.
    field_name
        Variable to read, e.g. ``"d_iner"``.
    shape
        Expected shape; ``None`` marks a free axis (time), which must hold >= 2 steps.

    Returns
    -------
    np.ndarray
        The field as float64.

    Raises
    ------
    DataFormatError
        If the file is not a readable MATLAB file (empty, truncated, another format), lacks
        the field, the field is not a numeric array of the expected shape, or it holds NaN
        or Inf. The error names ``path``.
    """
    try:
        content = scipy.io.loadmat(path, variable_names=[field_name])
    except Exception as err:  # loadmat raises many types (ValueError, TypeError, OSError, ...)
        raise DataFormatError(
            f"not a readable MATLAB file ({type(err).__name__}: {err}); {_FIX_HINT}", path
        ) from err
    if field_name not in content:
        raise DataFormatError(
            f"field {field_name!r} is missing (fields present: {_field_names(path)}); {_FIX_HINT}", path
        )
    value = content[field_name]
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "iuf":
        raise DataFormatError(
            f"field {field_name!r} is not a numeric array (got {type(value).__name__} "
            f"of {getattr(value, 'dtype', '?')}); {_FIX_HINT}",
            path,
        )
    expected = tuple("T" if d is None else d for d in shape)
    shape_ok = value.ndim == len(shape) and all(
        (want is None and got >= 2) or got == want for got, want in zip(value.shape, shape, strict=True)
    )
    if not shape_ok:
        raise DataFormatError(
            f"field {field_name!r} has shape {value.shape}, expected {expected} (T >= 2); {_FIX_HINT}", path
        )
    bad = ~np.isfinite(value)
    if bad.any():
        raise DataFormatError(
            f"field {field_name!r} holds {int(bad.sum())} NaN/Inf values "
            f"(first at index {tuple(int(i) for i in np.argwhere(bad)[0])}); {_FIX_HINT}",
            path,
        )
    return value.astype(np.float64, copy=False)


def _field_names(path: Path) -> list[str]:
    """Names of the variables in a MATLAB file, for error messages."""
    try:
        return [name for name, _, _ in scipy.io.whosmat(path)]
    except Exception:  # noqa: BLE001 - the file was readable a moment ago; naming fields is best effort
        return []
