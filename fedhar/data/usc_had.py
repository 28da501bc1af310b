"""USC-HAD reader: sliding windows over each trial, split into an acc and a gyro modality.

Zhang & Sawchuk, "USC-HAD: A Daily Activity Dataset for Ubiquitous Activity Recognition
Using Wearable Sensors", UbiComp 2012.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.signal import decimate
from tqdm import tqdm

from fedhar.config_mapping import build
from fedhar.data.dataset import DatasetInfo, HARDataset, ModalitySpec
from fedhar.data.orientation import IMU_FRAMES, to_gravity_frame
from fedhar.data.preprocess import seconds_to_samples, sliding_windows
from fedhar.data.raw_io import LoadReport, check_subject_filter, read_mat_array
from fedhar.errors import ConfigError, DataFormatError, DatasetNotFoundError

logger = logging.getLogger(__name__)

NAME = "usc-had"
#: Bump when the reader's output changes for the same files and settings (keys the cache).
READER_VERSION = 1

#: Activities as listed in the dataset's Readme.txt; label ``m - 1`` for file ``a<m>t<n>``.
ACTIVITY_NAMES = (
    "Walking Forward",
    "Walking Left",
    "Walking Right",
    "Walking Upstairs",
    "Walking Downstairs",
    "Running Forward",
    "Jumping Up",
    "Sitting",
    "Standing",
    "Sleeping",
    "Elevator Up",
    "Elevator Down",
)
ACC_CHANNELS = ("acc_x", "acc_y", "acc_z")
GYRO_CHANNELS = ("gyro_x", "gyro_y", "gyro_z")
SAMPLE_RATE_HZ = 100.0
NUM_SUBJECTS = 14
NUM_TRIALS = 5
#: Per-window extra array: start sample of the window within its trial (at the windows' rate).
START_INDEX = "start_index"

_SUBJECT_DIR = re.compile(r"Subject(\d+)")
_TRIAL_FILE = re.compile(r"a(\d+)t(\d+)\.mat")
_LAYOUT = "USC-HAD as published: Subject<k>/a<m>t<n>.mat"
TrialKey = tuple[int, int, int]  # subject, activity, trial


@dataclass(frozen=True)
class USCPreprocess:
    """USC-HAD windowing (configs/dataset/usc-had.yaml ``preprocess``).

    Parameters
    ----------
    window_s
        Window length in seconds (2 s = 200 samples, Harmony's input length).
    stride_s
        Step between window starts in seconds.
    downsample
        Keep every ``downsample``-th sample after an anti-aliasing filter (``scipy.signal.decimate``,
        zero-phase FIR): 1 keeps the recorded 100 Hz, 2 gives 50 Hz (the same seconds in half
        the samples, so a convolution sees twice as long a stretch of movement).
    imu_frame
        ``device``: the phone's axes as recorded; ``gravity``: each window turned so that
        its mean acceleration points along +z, the gyroscope by the same rotation
        (:mod:`fedhar.data.orientation`).
    """

    window_s: float = 2.0
    stride_s: float = 1.0
    downsample: int = 1
    imu_frame: str = "device"

    def __post_init__(self) -> None:
        if not isinstance(self.downsample, int) or isinstance(self.downsample, bool) or self.downsample < 1:
            raise ConfigError(f"downsample must be a whole number >= 1, got {self.downsample!r}",
                              "dataset.preprocess.downsample")
        if self.imu_frame not in IMU_FRAMES:
            raise ConfigError(f"imu_frame must be one of {IMU_FRAMES}, got {self.imu_frame!r}",
                              "dataset.preprocess.imu_frame")
        # ConfigError unless both are a positive, whole number of samples
        _ = (self.window_samples, self.stride_samples)

    @property
    def window_samples(self) -> int:
        """Window length in samples at the dataset's rate."""
        return seconds_to_samples(self.window_s, self.sample_rate_hz, "dataset.preprocess.window_s")

    @property
    def stride_samples(self) -> int:
        """Stride in samples at the dataset's rate."""
        return seconds_to_samples(self.stride_s, self.sample_rate_hz, "dataset.preprocess.stride_s")

    @property
    def sample_rate_hz(self) -> float:
        """Sampling rate of the windows after ``downsample``."""
        return SAMPLE_RATE_HZ / self.downsample

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]) -> USCPreprocess:
        """Build from ``DatasetConfig.preprocess``; unknown keys raise ``ConfigError``."""
        return build(cls, cfg, "dataset.preprocess")


def build_info(preprocess: USCPreprocess, subjects: tuple[int, ...]) -> DatasetInfo:
    """Dataset metadata for the given windowing and subjects."""
    window = preprocess.window_samples
    return DatasetInfo(
        name=NAME,
        modalities=(
            ModalitySpec("acc", (window, len(ACC_CHANNELS)), preprocess.sample_rate_hz, ACC_CHANNELS),
            ModalitySpec("gyro", (window, len(GYRO_CHANNELS)), preprocess.sample_rate_hz, GYRO_CHANNELS),
        ),
        class_names=ACTIVITY_NAMES,
        subjects=subjects,
    )


def list_source_files(root: Path, subjects: Collection[int] | None = None) -> list[Path]:
    """All ``Subject<k>/*.mat`` files under ``root`` (only those of ``subjects`` if given), sorted.

    With ``subjects`` (a device holding only its own subject's folder), the folders of
    other subjects are ignored, present or not.

    Raises
    ------
    DatasetNotFoundError
        If ``root`` is missing, has no ``Subject<k>/`` folder, or a (requested) subject
        folder is missing or holds no ``.mat`` file.
    ConfigError
        If a requested subject is outside 1..14.
    """
    if not root.is_dir():
        raise DatasetNotFoundError(f"dataset folder not found; point dataset.root at {_LAYOUT}", root)
    wanted = check_subject_filter(subjects, NUM_SUBJECTS, NAME)
    if wanted is None:
        subject_dirs = sorted(p for p in root.iterdir() if p.is_dir() and _SUBJECT_DIR.fullmatch(p.name))
        if not subject_dirs:
            raise DatasetNotFoundError(f"no Subject<k>/ folder; expected {_LAYOUT}", root)
    else:
        subject_dirs = [root / f"Subject{s}" for s in wanted]
        for folder, subject in zip(subject_dirs, wanted, strict=True):
            if not folder.is_dir():
                raise DatasetNotFoundError(
                    f"no folder {folder.name}/ for subject {subject}: this device must hold its own subject's "
                    f"files as published ({_LAYOUT})", folder)
    files: list[Path] = []
    for folder in subject_dirs:
        found = sorted(folder.glob("*.mat"))
        if not found:
            raise DatasetNotFoundError(f"no .mat file in {folder.name}/; expected {_LAYOUT}", folder)
        files.extend(found)
    return files


def read_usc_had(
    root: Path,
    preprocess: USCPreprocess | None = None,
    *,
    skip_bad_files: bool = False,
    progress: bool = False,
    subjects: Collection[int] | None = None,
) -> tuple[HARDataset, LoadReport]:
    """Read USC-HAD as sliding windows: modalities ``acc`` and ``gyro``, ``(window, 3)`` each.

    Subject, activity and trial come from the folder and file names (the fields inside
    some files are wrong, see the dataset README); only ``sensor_readings`` is read.
    Windows never cross trials; a trailing remainder shorter than a window is dropped, and
    a trial shorter than one window gives no sample (warned and listed in
    ``report.too_short``; none of the published trials is that short at 2 s).

    Parameters
    ----------
    root
        Folder holding ``Subject1/`` … ``Subject14/``.
    preprocess
        Window length and stride (defaults: 2 s windows every 1 s).
    skip_bad_files
        Skip bad files and missing trials with a warning (recorded in the report)
        instead of raising.
    progress
        Show a tqdm progress bar over the trials.
    subjects
        Read only these subjects' folders (``None``: all); the missing-trial check covers
        only them, and other subjects' folders are ignored.

    Returns
    -------
    dataset
        float32 windows ordered by (subject, activity, trial, start); ``trials`` holds the
        trial number and ``extra["start_index"]`` the window's first sample in its trial.
    report
        Files read, skipped and too short.

    Raises
    ------
    DatasetNotFoundError
        Wrong folder layout (see :func:`list_source_files`), or no window at all.
    DataFormatError
        A bad file, or a missing trial; the error names the file.
    ConfigError
        A requested subject outside 1..14.
    """
    pre = preprocess or USCPreprocess()
    window, stride = pre.window_samples, pre.stride_samples
    wanted = check_subject_filter(subjects, NUM_SUBJECTS, NAME)
    files = list_source_files(root, wanted)
    report = LoadReport(dataset=NAME)
    trials = _index_trials(root, files, report, skip_bad_files, wanted)
    chunks: list[np.ndarray] = []
    rows: list[np.ndarray] = []  # per trial: (num_windows, 5) subject, label, trial, start, 0
    for (subject, activity, trial), path in tqdm(
        trials.items(), desc=NAME, unit="trial", disable=None if progress else True
    ):
        try:
            readings = read_mat_array(path, "sensor_readings", (None, len(ACC_CHANNELS) + len(GYRO_CHANNELS)))
        except DataFormatError as err:
            if not skip_bad_files:
                raise
            report.record_skip(path, err.reason)
            continue
        report.files_read += 1
        if pre.downsample > 1 and len(readings) >= window * pre.downsample:  # shorter: no window either way
            readings = decimate(readings, pre.downsample, ftype="fir", axis=0, zero_phase=True)
        windows, starts = sliding_windows(readings.astype(np.float32), window, stride)
        if len(starts) == 0:
            logger.warning("%s: %s has %d samples, fewer than one window (%d): no sample", NAME, path,
                           len(readings), window)  # fmt: skip
            report.too_short.append(str(path))
            continue
        if pre.imu_frame == "gravity":
            windows = to_gravity_frame(windows)  # acc then gyro: one phone, one rotation
        chunks.append(windows)
        rows.append(np.column_stack([np.full((len(starts), 3), (subject, activity - 1, trial)), starts]))
    if not chunks:
        raise DatasetNotFoundError(f"no window of {window} samples could be read", root)
    data = np.concatenate(chunks)
    meta = np.concatenate(rows).astype(np.int64)
    n_acc = len(ACC_CHANNELS)
    dataset = HARDataset(
        info=build_info(pre, tuple(int(s) for s in np.unique(meta[:, 0]))),
        data={"acc": np.ascontiguousarray(data[..., :n_acc]), "gyro": np.ascontiguousarray(data[..., n_acc:])},
        labels=meta[:, 1].copy(),
        subjects=meta[:, 0].copy(),
        trials=meta[:, 2].copy(),
        extra={START_INDEX: meta[:, 3].copy()},
    )
    logger.info("%s: %d windows from %d trials (%d files skipped, %d too short)", NAME, len(dataset),
                report.files_read, report.num_skipped, len(report.too_short))  # fmt: skip
    return dataset, report


def _index_trials(root: Path, files: list[Path], report: LoadReport, skip_bad_files: bool,
                  subjects: tuple[int, ...] | None) -> dict[TrialKey, Path]:
    """(subject, activity, trial) -> file from the names; check every expected trial of ``subjects`` is there."""
    found: dict[TrialKey, Path] = {}
    for path in files:
        subject = int(_SUBJECT_DIR.fullmatch(path.parent.name).group(1))  # type: ignore[union-attr]
        match = _TRIAL_FILE.fullmatch(path.name)
        if match is None:
            logger.warning("%s: ignoring %s: name does not match a<m>t<n>.mat", NAME, path)
            continue
        activity, trial = int(match.group(1)), int(match.group(2))
        key = (subject, activity, trial)
        if not (1 <= subject <= NUM_SUBJECTS and 1 <= activity <= len(ACTIVITY_NAMES) and 1 <= trial <= NUM_TRIALS):
            reason = (
                f"subject/activity/trial {key} outside 1..{NUM_SUBJECTS}, 1..{len(ACTIVITY_NAMES)}, 1..{NUM_TRIALS}"
            )
            if not skip_bad_files:
                raise DataFormatError(f"{reason}; is this USC-HAD?", path)
            report.record_skip(path, reason)
            continue
        found[key] = path
    for key in _expected_trials(subjects):
        if key not in found:
            missing = root / f"Subject{key[0]}" / f"a{key[1]}t{key[2]}.mat"
            reason = f"trial {key[2]} of activity {key[1]} of subject {key[0]} not found"
            if not skip_bad_files:
                raise DataFormatError(f"{reason}; restore the file or set dataset.skip_bad_files=true", missing)
            report.record_skip(missing, reason)
    return dict(sorted(found.items()))


def _expected_trials(subjects: tuple[int, ...] | None = None) -> list[TrialKey]:
    return [
        (s, a, t)
        for s in (subjects if subjects is not None else range(1, NUM_SUBJECTS + 1))
        for a in range(1, len(ACTIVITY_NAMES) + 1)
        for t in range(1, NUM_TRIALS + 1)
    ]
