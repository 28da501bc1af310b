"""UTD-MHAD reader: paired inertial and skeleton trials, one resampled sample per trial.

Chen, Jafari & Kehtarnavaz, "UTD-MHAD: A Multimodal Dataset for Human Action Recognition
Utilizing a Depth Camera and a Wearable Inertial Sensor", ICIP 2015.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from fedhar.config_mapping import build
from fedhar.data.dataset import DatasetInfo, HARDataset, ModalitySpec
from fedhar.data.preprocess import resample_linear
from fedhar.data.raw_io import LoadReport, check_subject_filter, read_mat_array
from fedhar.errors import ConfigError, DataFormatError, DatasetNotFoundError

logger = logging.getLogger(__name__)

NAME = "utd-mhad"
#: Bump when the reader's output changes for the same files and settings (keys the cache).
READER_VERSION = 1

#: The 27 actions as listed on the UTD-MHAD page; label ``m - 1`` for file ``a<m>_…``.
ACTION_NAMES = (
    "right arm swipe to the left",
    "right arm swipe to the right",
    "right hand wave",
    "two hand front clap",
    "right arm throw",
    "cross arms in the chest",
    "basketball shoot",
    "right hand draw x",
    "right hand draw circle (clockwise)",
    "right hand draw circle (counter clockwise)",
    "draw triangle",
    "bowling (right hand)",
    "front boxing",
    "baseball swing from right",
    "tennis right hand forehand swing",
    "arm curl (two arms)",
    "tennis serve",
    "two hand push",
    "right hand knock on door",
    "right hand catch an object",
    "right hand pick up and throw",
    "jogging in place",
    "walking in place",
    "sit to stand",
    "stand to sit",
    "forward lunge (left foot forward)",
    "squat (two arms stretch out)",
)
#: Joint order of ``d_skel`` (Skeleton/Skeleton_joint_order.txt).
JOINT_NAMES = (
    "head", "shoulder_center", "spine", "hip_center",
    "left_shoulder", "left_elbow", "left_wrist", "left_hand",
    "right_shoulder", "right_elbow", "right_wrist", "right_hand",
    "left_hip", "left_knee", "left_ankle", "left_foot",
    "right_hip", "right_knee", "right_ankle", "right_foot",
)  # fmt: skip
IMU_CHANNELS = ("acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z")
SKELETON_CHANNELS = ("x", "y", "z")
IMU_RATE_HZ = 50.0
SKELETON_RATE_HZ = 30.0
NUM_SUBJECTS = 8
NUM_TRIALS = 4
#: (action, subject, trial) absent from the published dataset: 864 - 3 = 861 sequences.
KNOWN_MISSING_TRIALS = frozenset({(8, 1, 4), (23, 6, 4), (27, 8, 4)})

INERTIAL_DIR = "Inertial"
SKELETON_DIR = "Skeleton"
_PATTERNS = {
    INERTIAL_DIR: re.compile(r"a(\d+)_s(\d+)_t(\d+)_inertial\.mat"),
    SKELETON_DIR: re.compile(r"a(\d+)_s(\d+)_t(\d+)_skeleton\.mat"),
}
_SUFFIX = {INERTIAL_DIR: "inertial", SKELETON_DIR: "skeleton"}
TrialKey = tuple[int, int, int]


@dataclass(frozen=True)
class UTDPreprocess:
    """Cosmo's UTD-MHAD preprocessing (configs/dataset/utd-mhad.yaml ``preprocess``).

    Parameters
    ----------
    imu_length
        Time steps each inertial trial is resampled to.
    skeleton_frames
        Frames each skeleton trial is resampled to.
    min_length_fraction
        A trial with fewer than this fraction of the target length (per modality) is an
        error naming the file (or skipped with ``skip_bad_files``), not stretched: a
        3-sample recording interpolated to 120 steps is not a sample of the action. The
        published trials have at least 107 inertial samples and 41 frames.
    """

    imu_length: int = 120
    skeleton_frames: int = 40
    min_length_fraction: float = 0.5

    def __post_init__(self) -> None:
        for name in ("imu_length", "skeleton_frames"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 2:
                raise ConfigError(f"{name} must be an integer >= 2, got {value!r}", f"dataset.preprocess.{name}")
        if not 0.0 <= self.min_length_fraction <= 1.0:
            raise ConfigError(f"min_length_fraction must be in [0, 1], got {self.min_length_fraction}",
                              "dataset.preprocess.min_length_fraction")

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]) -> UTDPreprocess:
        """Build from ``DatasetConfig.preprocess``; unknown keys raise ``ConfigError``."""
        return build(cls, cfg, "dataset.preprocess")


def build_info(preprocess: UTDPreprocess, subjects: tuple[int, ...]) -> DatasetInfo:
    """Dataset metadata for the given preprocessing and subjects."""
    return DatasetInfo(
        name=NAME,
        modalities=(
            ModalitySpec("inertial", (preprocess.imu_length, len(IMU_CHANNELS)), IMU_RATE_HZ, IMU_CHANNELS),
            ModalitySpec(
                "skeleton",
                (preprocess.skeleton_frames, len(JOINT_NAMES), len(SKELETON_CHANNELS)),
                SKELETON_RATE_HZ,
                SKELETON_CHANNELS,
            ),
        ),
        class_names=ACTION_NAMES,
        subjects=subjects,
    )


def list_source_files(root: Path, subjects: Collection[int] | None = None) -> list[Path]:
    """All raw ``.mat`` files under ``root`` (Inertial then Skeleton), sorted.

    With ``subjects`` (a device holding only its own subject's files), only files named
    ``…_s<k>_…`` for a requested ``k`` are listed; other subjects' files are ignored.

    Raises
    ------
    DatasetNotFoundError
        If ``root`` or one of its ``Inertial/``, ``Skeleton/`` folders is missing or holds
        no ``.mat`` file (of a requested subject).
    ConfigError
        If a requested subject is outside 1..8.
    """
    layout = "UTD-MHAD as published: Inertial/a<m>_s<k>_t<n>_inertial.mat and Skeleton/…_skeleton.mat"
    if not root.is_dir():
        raise DatasetNotFoundError(f"dataset folder not found; point dataset.root at {layout}", root)
    wanted = check_subject_filter(subjects, NUM_SUBJECTS, NAME)
    for sub in (INERTIAL_DIR, SKELETON_DIR):
        if not (root / sub).is_dir():
            raise DatasetNotFoundError(f"folder {sub}/ is missing; expected {layout}", root / sub)
    files: list[Path] = []
    for sub in (INERTIAL_DIR, SKELETON_DIR):
        folder = root / sub
        found = sorted(folder.glob("*.mat"))
        if wanted is not None:
            by_subject = {s: [p for p in found if _subject_of(p) == s] for s in wanted}
            for subject, own in by_subject.items():
                if not own:
                    raise DatasetNotFoundError(
                        f"no file of subject {subject} (a*_s{subject}_t*_{_SUFFIX[sub]}.mat) in {sub}/: this device "
                        f"must hold its own subject's files; expected {layout}", folder)
            found = sorted(p for own in by_subject.values() for p in own)
        if not found:
            raise DatasetNotFoundError(f"no .mat file in {sub}/; expected {layout}", folder)
        files.extend(found)
    return files


def _subject_of(path: Path) -> int | None:
    """The subject in a raw file's name, or ``None`` if the name is not as published."""
    match = _PATTERNS[path.parent.name].fullmatch(path.name)
    return None if match is None else int(match.group(2))


def read_utd_mhad(
    root: Path,
    preprocess: UTDPreprocess | None = None,
    *,
    skip_bad_files: bool = False,
    progress: bool = False,
    subjects: Collection[int] | None = None,
) -> tuple[HARDataset, LoadReport]:
    """Read UTD-MHAD: one sample per trial, inertial ``(imu_length, 6)`` and skeleton
    ``(skeleton_frames, 20, 3)``, both resampled by linear interpolation.

    Trials are paired by the (action, subject, trial) in their file names. Labels are
    ``action - 1``; subjects and trials are as published.

    Parameters
    ----------
    root
        Folder holding ``Inertial/`` and ``Skeleton/``.
    preprocess
        Resampling lengths (defaults: Cosmo's 120 and 40).
    skip_bad_files
        Skip bad files and incomplete trials with a warning (recorded in the report)
        instead of raising.
    progress
        Show a tqdm progress bar over the trials.
    subjects
        Read only these subjects' files (``None``: all); the incomplete-trial check covers
        only them, and other subjects' files are ignored.

    Returns
    -------
    dataset
        The float32 dataset, ordered by (action, subject, trial).
    report
        Files read and skipped.

    Raises
    ------
    DatasetNotFoundError
        Wrong folder layout (see :func:`list_source_files`), or no readable trial.
    DataFormatError
        A bad file, or a trial missing its inertial or skeleton file (other than the
        three known missing trials); the error names the file.
    ConfigError
        A requested subject outside 1..8.
    """
    pre = preprocess or UTDPreprocess()
    wanted = check_subject_filter(subjects, NUM_SUBJECTS, NAME)
    list_source_files(root, wanted)
    report = LoadReport(dataset=NAME)
    pairs = _pair_trials(root, report, skip_bad_files, wanted)
    inertial, skeleton, keys = [], [], []
    for key, (imu_path, skel_path) in tqdm(pairs.items(), desc=NAME, unit="trial", disable=None if progress else True):
        try:
            imu = read_mat_array(imu_path, "d_iner", (None, len(IMU_CHANNELS)))
            skel = read_mat_array(skel_path, "d_skel", (len(JOINT_NAMES), len(SKELETON_CHANNELS), None))
            _check_length(imu_path, imu.shape[0], pre.imu_length, pre.min_length_fraction, "inertial samples")
            _check_length(skel_path, skel.shape[2], pre.skeleton_frames, pre.min_length_fraction, "skeleton frames")
        except DataFormatError as err:
            if not skip_bad_files:
                raise
            report.record_skip(err.culprit or imu_path, f"{err.reason} (trial {_trial_name(key)} left out)")
            continue
        report.files_read += 2
        inertial.append(resample_linear(imu, pre.imu_length))
        # d_skel is (joints, coords, frames): time first -> (frames, joints, coords)
        skeleton.append(resample_linear(np.transpose(skel, (2, 0, 1)), pre.skeleton_frames))
        keys.append(key)
    if not keys:
        raise DatasetNotFoundError("no readable trial found", root)
    index = np.asarray(keys, dtype=np.int64)  # (N, 3): action, subject, trial
    dataset = HARDataset(
        info=build_info(pre, tuple(int(s) for s in np.unique(index[:, 1]))),
        data={"inertial": np.stack(inertial).astype(np.float32), "skeleton": np.stack(skeleton).astype(np.float32)},
        labels=index[:, 0] - 1,
        subjects=index[:, 1].copy(),
        trials=index[:, 2].copy(),
    )
    logger.info("%s: read %d trials (%d files skipped)", NAME, len(dataset), report.num_skipped)
    return dataset, report


def _check_length(path: Path, length: int, target: int, fraction: float, what: str) -> None:
    """Raise :class:`DataFormatError` naming ``path`` if the trial is shorter than ``fraction x target``."""
    if length < fraction * target:
        raise DataFormatError(f"{length} {what}, fewer than {fraction:g} x the target {target}; a trial this short "
                              "would be stretched, not resampled (dataset.preprocess.min_length_fraction)", path)


def _pair_trials(root: Path, report: LoadReport, skip_bad_files: bool,
                 subjects: tuple[int, ...] | None) -> dict[TrialKey, tuple[Path, Path]]:
    """Pair inertial and skeleton files by name; check every expected trial of ``subjects`` is there."""
    found = {sub: _index_folder(root / sub, report, skip_bad_files, subjects) for sub in (INERTIAL_DIR, SKELETON_DIR)}
    expected = {
        (a, s, t)
        for a in range(1, len(ACTION_NAMES) + 1)
        for s in (subjects if subjects is not None else range(1, NUM_SUBJECTS + 1))
        for t in range(1, NUM_TRIALS + 1)
    } - KNOWN_MISSING_TRIALS
    pairs: dict[TrialKey, tuple[Path, Path]] = {}
    for key in sorted(expected | set(found[INERTIAL_DIR]) | set(found[SKELETON_DIR])):
        imu, skel = found[INERTIAL_DIR].get(key), found[SKELETON_DIR].get(key)
        if imu is not None and skel is not None:
            pairs[key] = (imu, skel)
            continue
        if imu is None and skel is None and key in KNOWN_MISSING_TRIALS:
            continue
        missing = [root / sub / f"{_trial_name(key)}_{_SUFFIX[sub]}.mat" for sub, p in
                   ((INERTIAL_DIR, imu), (SKELETON_DIR, skel)) if p is None]  # fmt: skip
        reason = f"trial {_trial_name(key)} is incomplete: {', '.join(str(m) for m in missing)} not found"
        if not skip_bad_files:
            raise DataFormatError(f"{reason}; restore the file or set dataset.skip_bad_files=true", missing[0])
        report.record_skip(missing[0], reason)
    return pairs


def _index_folder(folder: Path, report: LoadReport, skip_bad_files: bool,
                  subjects: tuple[int, ...] | None) -> dict[TrialKey, Path]:
    """(action, subject, trial) -> file, from the file names of one folder (of ``subjects`` only, if given)."""
    pattern = _PATTERNS[folder.name]
    out: dict[TrialKey, Path] = {}
    for path in sorted(folder.glob("*.mat")):
        match = pattern.fullmatch(path.name)
        if match is None:
            if subjects is None:
                logger.warning("%s: ignoring %s: name does not match %s", NAME, path, pattern.pattern)
            continue
        a, s, t = (int(g) for g in match.groups())
        if subjects is not None and s not in subjects:
            continue  # another subject's file on this device
        if not (1 <= a <= len(ACTION_NAMES) and 1 <= s <= NUM_SUBJECTS and 1 <= t <= NUM_TRIALS):
            reason = (
                f"action/subject/trial ({a}, {s}, {t}) outside 1..{len(ACTION_NAMES)}, "
                f"1..{NUM_SUBJECTS}, 1..{NUM_TRIALS}"
            )
            if not skip_bad_files:
                raise DataFormatError(f"{reason}; is this UTD-MHAD?", path)
            report.record_skip(path, reason)
            continue
        out[(a, s, t)] = path
    return out


def _trial_name(key: TrialKey) -> str:
    return "a{}_s{}_t{}".format(*key)

