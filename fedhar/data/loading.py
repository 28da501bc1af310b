"""Load a dataset by its config: pick the reader, go through the on-disk cache."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fedhar.data import usc_had, utd_mhad
from fedhar.data.cache import DatasetCache, compute_cache_key, fingerprint_files
from fedhar.data.config import DatasetConfig
from fedhar.data.dataset import DatasetInfo, HARDataset
from fedhar.data.raw_io import LoadReport, check_subject_filter
from fedhar.errors import ConfigError, DatasetNotFoundError

logger = logging.getLogger(__name__)

SYNTHETIC = "synthetic"


@dataclass(frozen=True)
class _Reader:
    """How to parse settings for, list the files of, read, and describe one raw dataset."""

    version: int
    parse_preprocess: Callable[[Mapping[str, Any]], Any]
    list_files: Callable[[Path, tuple[int, ...] | None], list[Path]]
    read: Callable[..., tuple[HARDataset, LoadReport]]
    build_info: Callable[[Any, tuple[int, ...]], DatasetInfo]
    num_subjects: int


_READERS: dict[str, _Reader] = {
    utd_mhad.NAME: _Reader(
        utd_mhad.READER_VERSION, utd_mhad.UTDPreprocess.from_mapping, utd_mhad.list_source_files,
        utd_mhad.read_utd_mhad, utd_mhad.build_info, utd_mhad.NUM_SUBJECTS,
    ),
    usc_had.NAME: _Reader(
        usc_had.READER_VERSION, usc_had.USCPreprocess.from_mapping, usc_had.list_source_files, usc_had.read_usc_had,
        usc_had.build_info, usc_had.NUM_SUBJECTS,
    ),
}


def describe_dataset(cfg: DatasetConfig) -> DatasetInfo:
    """Metadata (modality shapes, class names, all published subjects) of ``cfg``, without reading raw files.

    What an exporter needs to rebuild a model where the dataset is not present.

    Raises
    ------
    ConfigError
        Unknown dataset name or preprocessing key.
    """
    if cfg.name == SYNTHETIC:
        from fedhar.data.synthetic import make_synthetic  # generated in memory, cheap

        return make_synthetic(cfg).info
    reader = _READERS.get(cfg.name)
    if reader is None:
        raise ConfigError(f"no reader for dataset {cfg.name!r}; known: {sorted(_READERS)}", "dataset.name")
    return reader.build_info(reader.parse_preprocess(cfg.preprocess), tuple(range(1, reader.num_subjects + 1)))


def load_dataset(cfg: DatasetConfig, subjects: Collection[int] | None = None) -> HARDataset:
    """Preprocessed, not normalised dataset named by ``cfg`` (cached when ``cfg.cache_dir`` is set).

    See :func:`load_dataset_with_report` for the parameters and errors.
    """
    return load_dataset_with_report(cfg, subjects=subjects)[0]


def load_dataset_with_report(
    cfg: DatasetConfig, *, progress: bool = True, subjects: Collection[int] | None = None
) -> tuple[HARDataset, LoadReport]:
    """Load the dataset named by ``cfg`` and report what was read, skipped or cached.

    With ``cfg.cache_dir`` set, the preprocessed arrays are read from the cache entry whose
    key matches the dataset, reader version, preprocessing settings, ``skip_bad_files``,
    the subject filter and the names, sizes and mtimes of the raw files; otherwise the raw
    files are read (with a tqdm progress bar) and the entry is written. ``"synthetic"`` is
    generated, never cached.

    Parameters
    ----------
    cfg
        Dataset settings.
    progress
        Show a progress bar over the raw files on a first load (only on a terminal).
    subjects
        Read only these subjects' files (a deployed device holds only its own subject's);
        ``None`` reads every subject. ``info.subjects`` of the result lists the subjects read.

    Returns
    -------
    dataset
        float32 arrays per modality, int64 labels, subjects and trials.
    report
        Files read, bad files skipped, whether the cache was used, time taken.

    Raises
    ------
    ConfigError
        Unknown dataset name or preprocessing key; a requested subject the dataset lacks.
    DatasetNotFoundError
        ``cfg.root`` unset, missing or not laid out as published; no file of a requested
        subject (the error names the folder and the subject).
    DataFormatError
        A bad raw file or a missing trial (of a requested subject), unless ``cfg.skip_bad_files``.
    """
    start = time.perf_counter()
    if cfg.name == SYNTHETIC:
        from fedhar.data.synthetic import make_synthetic  # written separately; imported on use

        dataset = _select_subjects(make_synthetic(cfg), subjects)
        return dataset, LoadReport(dataset=cfg.name, seconds=time.perf_counter() - start)
    reader = _READERS.get(cfg.name)
    if reader is None:
        raise ConfigError(f"no reader for dataset {cfg.name!r}; known: {sorted(_READERS)}", "dataset.name")
    if cfg.root is None:
        raise DatasetNotFoundError(f"dataset.root is not set for {cfg.name}; set paths.data_dir", "dataset.root")
    root = Path(cfg.root)
    settings = reader.parse_preprocess(cfg.preprocess)
    wanted = None if subjects is None else tuple(sorted({int(s) for s in subjects}))

    cache: DatasetCache | None = None
    key = ""
    if cfg.cache_dir is not None:
        fingerprint = fingerprint_files(root, reader.list_files(root, wanted))
        key = compute_cache_key(cfg.name, reader.version, asdict(settings), cfg.skip_bad_files, fingerprint,
                                subjects=wanted)
        cache = DatasetCache(cfg.cache_dir)
        hit = cache.load(cfg.name, key)
        if hit is not None:
            saved_report = hit.meta.get("report")
            report = LoadReport.from_dict(cfg.name, saved_report) if saved_report else LoadReport(cfg.name)
            report.from_cache, report.cache_path = True, str(hit.path)
            report.seconds = time.perf_counter() - start
            if report.skipped:
                logger.warning("%s: %d bad files were skipped when cache entry %s was built: %s", cfg.name,
                               report.num_skipped, hit.path, [s.path for s in report.skipped])  # fmt: skip
            logger.info("%s: %d rows from cache %s in %.2f s", cfg.name, len(hit.dataset), hit.path, report.seconds)
            return hit.dataset, report

    dataset, report = reader.read(root, settings, skip_bad_files=cfg.skip_bad_files, progress=progress,
                                  subjects=wanted)
    if cache is not None:
        saved = cache.save(key, dataset, {"report": report.to_dict()})
        report.cache_path = None if saved is None else str(saved)
    report.seconds = time.perf_counter() - start
    logger.info("%s: %d rows read from %s in %.2f s", cfg.name, len(dataset), root, report.seconds)
    return dataset, report


def _select_subjects(dataset: HARDataset, subjects: Collection[int] | None) -> HARDataset:
    """The rows of ``subjects`` (all if ``None``), with ``info.subjects`` narrowed to them.

    Raises
    ------
    ConfigError
        If a requested subject is not a subject of ``dataset``.
    """
    wanted = check_subject_filter(subjects, max(dataset.info.subjects), dataset.info.name)
    if wanted is None:
        return dataset
    missing = sorted(set(wanted) - set(dataset.info.subjects))
    if missing:
        raise ConfigError(f"{dataset.info.name} has no subjects {missing}; it has {list(dataset.info.subjects)}",
                          "subjects")
    selected = dataset.subset(dataset.indices_of_subjects(wanted))
    return dataclasses.replace(selected, info=dataclasses.replace(dataset.info, subjects=wanted))
