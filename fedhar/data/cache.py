"""On-disk cache of preprocessed (not normalised) datasets, keyed by settings and source files.

One entry is one uncompressed ``.npz`` file holding every array of a :class:`HARDataset`
plus a JSON metadata record (``__meta__``). Entries are written to a temporary file in the
cache folder and moved into place with ``os.replace``, so a reader never sees a partial
entry. The zip container stores a CRC-32 of every array, which ``np.load`` checks when the
array is read in full; with the key, format version and array names stored in the metadata,
a truncated, corrupted or foreign entry is detected, logged, deleted and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedhar.data.dataset import DatasetInfo, HARDataset, ModalitySpec
from fedhar.errors import CacheError

logger = logging.getLogger(__name__)

#: Bump when the layout of an entry changes.
CACHE_FORMAT_VERSION = 1
_META = "__meta__"
_DATA_PREFIX = "data/"
_EXTRA_PREFIX = "extra/"
_INDEX_ARRAYS = ("labels", "subjects", "trials")
# Everything reading a damaged or foreign entry can raise; the entry is then rebuilt.
_READ_ERRORS = (
    OSError, ValueError, KeyError, TypeError, AttributeError, EOFError, zipfile.BadZipFile, zlib.error, CacheError,
)  # fmt: skip


@dataclass(frozen=True)
class CacheHit:
    """A dataset read back from the cache, with the metadata saved beside it."""

    dataset: HARDataset
    meta: Mapping[str, Any]
    path: Path


def fingerprint_files(root: Path, files: Sequence[Path]) -> list[tuple[str, int, int]]:
    """(path relative to ``root``, size in bytes, mtime in ns) of each file, sorted by path.

    Any change of a source file's name, size or modification time changes the cache key.
    """
    out = []
    for path in files:
        st = path.stat()
        out.append((path.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns))
    return sorted(out)


def compute_cache_key(
    dataset: str,
    reader_version: int,
    preprocess: Mapping[str, Any],
    skip_bad_files: bool,
    fingerprint: Sequence[tuple[str, int, int]],
    subjects: Sequence[int] | None = None,
) -> str:
    """SHA-256 (hex) of everything that determines a dataset's preprocessed arrays.

    Parameters
    ----------
    dataset
        Dataset name.
    reader_version
        The reader's version constant (bumped when its output changes).
    preprocess
        Preprocessing settings with defaults filled in (JSON-serialisable).
    skip_bad_files
        Whether bad files are skipped (changes what a damaged dataset yields).
    fingerprint
        Output of :func:`fingerprint_files`.
    subjects
        The subject filter of the load (a device reads only its own subject); ``None``
        (every subject) leaves the key as it was before filters existed.
    """
    record = {
        "format": CACHE_FORMAT_VERSION,
        "dataset": dataset,
        "reader_version": reader_version,
        "preprocess": dict(preprocess),
        "skip_bad_files": bool(skip_bad_files),
        "files": [list(f) for f in fingerprint],
    }
    if subjects is not None:
        record["subjects"] = sorted(int(s) for s in subjects)
    blob = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


class DatasetCache:
    """A folder of cached datasets, one ``<dataset>-<key prefix>.npz`` file per entry.

    Parameters
    ----------
    cache_dir
        Folder of the entries; created on the first save.
    """

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = Path(cache_dir)

    def entry_path(self, dataset: str, key: str) -> Path:
        """File of the entry for ``dataset`` under ``key``."""
        return self.cache_dir / f"{dataset}-{key[:24]}.npz"

    def load(self, dataset: str, key: str) -> CacheHit | None:
        """The entry for ``key``, or ``None`` if absent; a bad entry is logged, deleted and ``None``."""
        path = self.entry_path(dataset, key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}  # reads all: checks every CRC
            meta = json.loads(arrays.pop(_META).tobytes().decode())
            if meta.get("format") != CACHE_FORMAT_VERSION or meta.get("key") != key:
                raise CacheError(f"entry is for format {meta.get('format')}, key {meta.get('key')}", path)
            dataset_obj = _from_arrays(meta, arrays, path)
        except _READ_ERRORS as err:
            logger.warning("cache entry %s is unreadable (%s: %s); deleting and rebuilding it",
                           path, type(err).__name__, err)  # fmt: skip
            _remove(path)
            return None
        return CacheHit(dataset=dataset_obj, meta=meta["extra_meta"], path=path)

    def save(self, key: str, dataset: HARDataset, extra_meta: Mapping[str, Any] | None = None) -> Path | None:
        """Write ``dataset`` atomically under ``key``; ``None`` (and a warning) if that fails.

        A failed write never raises: the cache only saves time.
        """
        path = self.entry_path(dataset.info.name, key)
        meta = {"format": CACHE_FORMAT_VERSION, "key": key, "extra_meta": dict(extra_meta or {})}
        arrays = _to_arrays(dataset, meta)
        tmp_name: str | None = None
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=self.cache_dir)
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)  # type: ignore[arg-type]  # numpy's stub: a **dict might set allow_pickle
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp_name, path)
            tmp_name = None
        except OSError as err:
            logger.warning("could not write cache entry %s (%s); continuing without it", path, err)
            return None
        finally:
            if tmp_name is not None:
                _remove(Path(tmp_name))
        logger.info("cached %s (%d rows) in %s", dataset.info.name, len(dataset), path)
        return path


def _to_arrays(dataset: HARDataset, meta: dict[str, Any]) -> dict[str, np.ndarray]:
    """Flat name -> array mapping of ``dataset``, with ``meta`` (plus its info) as JSON bytes."""
    arrays = {f"{_DATA_PREFIX}{k}": np.ascontiguousarray(v) for k, v in dataset.data.items()}
    arrays |= {f"{_EXTRA_PREFIX}{k}": np.ascontiguousarray(v) for k, v in dataset.extra.items()}
    arrays |= {name: np.ascontiguousarray(getattr(dataset, name)) for name in _INDEX_ARRAYS}
    full = {**meta, "info": _info_to_dict(dataset.info), "arrays": sorted(arrays)}
    arrays[_META] = np.frombuffer(json.dumps(full, sort_keys=True).encode(), dtype=np.uint8)
    return arrays


def _from_arrays(meta: Mapping[str, Any], arrays: dict[str, np.ndarray], path: Path) -> HARDataset:
    """Inverse of :func:`_to_arrays`; ``CacheError`` if the arrays do not match the metadata."""
    if sorted(arrays) != meta["arrays"]:
        raise CacheError(f"entry holds arrays {sorted(arrays)}, metadata lists {meta['arrays']}", path)
    try:
        return HARDataset(
            info=_info_from_dict(meta["info"]),
            data={k[len(_DATA_PREFIX):]: v for k, v in arrays.items() if k.startswith(_DATA_PREFIX)},
            labels=arrays["labels"],
            subjects=arrays["subjects"],
            trials=arrays["trials"],
            extra={k[len(_EXTRA_PREFIX):]: v for k, v in arrays.items() if k.startswith(_EXTRA_PREFIX)},
        )
    except (TypeError, ValueError) as err:
        raise CacheError(f"entry does not form a valid dataset: {err}", path) from err


def _info_to_dict(info: DatasetInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "modalities": [
            {"name": m.name, "shape": list(m.shape), "sample_rate_hz": m.sample_rate_hz,
             "channel_names": list(m.channel_names)}
            for m in info.modalities
        ],
        "class_names": list(info.class_names),
        "subjects": list(info.subjects),
    }


def _info_from_dict(d: Mapping[str, Any]) -> DatasetInfo:
    return DatasetInfo(
        name=str(d["name"]),
        modalities=tuple(
            ModalitySpec(str(m["name"]), tuple(int(s) for s in m["shape"]), float(m["sample_rate_hz"]),
                         tuple(str(c) for c in m["channel_names"]))
            for m in d["modalities"]
        ),
        class_names=tuple(str(c) for c in d["class_names"]),
        subjects=tuple(int(s) for s in d["subjects"]),
    )


def _remove(path: Path) -> None:
    """Delete ``path`` if possible; a failure is logged, never raised."""
    try:
        path.unlink(missing_ok=True)
    except OSError as err:
        logger.warning("could not delete %s: %s", path, err)
