"""SHA-256 manifests of the published datasets: build them, ship them, verify folders against them."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatch
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

from tqdm import tqdm

from fedhar.errors import DataFormatError, DatasetNotFoundError, ManifestMismatchError

__all__ = [
    "IGNORED",
    "Manifest",
    "ManifestEntry",
    "VerifyReport",
    "build_manifest",
    "check_folder",
    "hash_file",
    "load_manifest",
    "read_manifest",
    "verify_folder",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
# Not part of any official archive: provenance notes and OS litter, never listed or reported.
IGNORED = ("SOURCE.txt", ".*", "*/.*", "__MACOSX/*")
_MAX_NAMED = 10


@dataclass(frozen=True)
class ManifestEntry:
    """One file of a dataset: its path relative to the dataset folder, size and SHA-256.

    ``optional`` files are checked when present but may be missing (some official
    copies lack them).
    """

    path: str
    sha256: str
    size: int
    optional: bool = False


@dataclass(frozen=True)
class Manifest:
    """The files of a dataset as published.

    Parameters
    ----------
    name
        Dataset name (``"utd-mhad"``).
    folder
        Folder name the dataset is installed as (``"UTD-MHAD"``).
    entries
        One entry per file, sorted by path.
    note
        Where the hashes were taken from.
    """

    name: str
    folder: str
    entries: tuple[ManifestEntry, ...]
    note: str = ""

    def __post_init__(self) -> None:
        for entry in self.entries:
            _check_relative(entry.path, self.name)

    @property
    def paths(self) -> frozenset[str]:
        """Relative paths of every listed file."""
        return frozenset(e.path for e in self.entries)

    @property
    def total_bytes(self) -> int:
        """Total size of the listed files."""
        return sum(e.size for e in self.entries)

    def to_json(self) -> str:
        """Render the manifest as JSON text, one line per file (readable diffs)."""
        head = {"format": FORMAT_VERSION, "name": self.name, "folder": self.folder,
                "algorithm": "sha256", "note": self.note}
        lines = [json.dumps(head, indent=2)[:-2] + ',\n  "files": {']
        rows = []
        for e in self.entries:
            record: dict[str, Any] = {"size": e.size, "sha256": e.sha256}
            if e.optional:
                record["optional"] = True
            rows.append(f"    {json.dumps(e.path)}: {json.dumps(record)}")
        lines.append(",\n".join(rows))
        lines.append("  }\n}\n")
        return "\n".join(lines)

    def save(self, path: str | Path) -> Path:
        """Write the manifest to ``path`` (parents created) and return it."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(self.to_json(), encoding="utf-8")
        return out

    @classmethod
    def from_json(cls, text: str, source: str | Path = "<manifest>") -> Manifest:
        """Parse JSON written by :meth:`to_json`.

        Raises
        ------
        DataFormatError
            If the text is not a manifest of a known format.
        """
        try:
            raw = json.loads(text)
            if raw.get("format") != FORMAT_VERSION or raw.get("algorithm") != "sha256":
                raise ValueError(f"format {raw.get('format')!r}/{raw.get('algorithm')!r}")
            entries = tuple(
                ManifestEntry(path=p, sha256=str(r["sha256"]).lower(), size=int(r["size"]),
                              optional=bool(r.get("optional", False)))
                for p, r in sorted(raw["files"].items())
            )
            return cls(name=str(raw["name"]), folder=str(raw["folder"]), entries=entries,
                       note=str(raw.get("note", "")))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise DataFormatError(
                f"not a fedhar manifest (format {FORMAT_VERSION}, sha256): {err}; regenerate it with "
                "build_manifest", source,
            ) from err


@dataclass(frozen=True)
class VerifyReport:
    """Outcome of checking a folder against a manifest.

    ``mismatched`` files differ in size or SHA-256, ``missing`` required files are
    absent, ``extra`` files are not in the manifest (a warning only).
    """

    root: Path
    manifest: str
    checked: int
    mismatched: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    missing_optional: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True if every required file is present with the published bytes."""
        return not self.mismatched and not self.missing

    def problems(self) -> str:
        """Name the changed and missing files (empty when :attr:`ok`)."""
        parts = []
        if self.mismatched:
            parts.append(f"{len(self.mismatched)} changed (size or SHA-256 differ): {_name_some(self.mismatched)}")
        if self.missing:
            parts.append(f"{len(self.missing)} missing: {_name_some(self.missing)}")
        return "; ".join(parts)

    def summary(self) -> str:
        """One line: how many files matched and what is wrong."""
        parts = [f"{self.checked} files match the {self.manifest} manifest"]
        for label, paths in (("changed", self.mismatched), ("missing", self.missing),
                             ("extra (ignored)", self.extra)):
            if paths:
                parts.append(f"{len(paths)} {label}: {_name_some(paths)}")
        return "; ".join(parts)


def hash_file(path: str | Path) -> str:
    """SHA-256 of a file's bytes, as lowercase hex."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def build_manifest(
    name: str,
    root: str | Path,
    *,
    folder: str | None = None,
    optional: Iterable[str] = (),
    note: str = "",
) -> Manifest:
    """Hash every file under ``root`` (except :data:`IGNORED`) into a manifest.

    Parameters
    ----------
    name
        Dataset name recorded in the manifest.
    root
        The dataset folder as published (``.../UTD-MHAD``).
    folder
        Installed folder name; defaults to ``root``'s name.
    optional
        Relative paths (glob patterns) to mark optional.
    note
        Where the files come from.

    Raises
    ------
    DatasetNotFoundError
        If ``root`` is not a folder or holds no files.
    """
    base = Path(root)
    if not base.is_dir():
        raise DatasetNotFoundError("expected a folder holding the dataset as published", base)
    patterns = tuple(optional)
    entries = tuple(
        ManifestEntry(path=rel, sha256=hash_file(base / rel), size=(base / rel).stat().st_size,
                      optional=any(fnmatch(rel, p) for p in patterns))
        for rel in sorted(_walk(base))
    )
    if not entries:
        raise DatasetNotFoundError("the folder holds no files to list in a manifest", base)
    logger.info("hashed %d files (%.1f MB) under %s", len(entries), sum(e.size for e in entries) / 1e6, base)
    return Manifest(name=name, folder=folder or base.name, entries=entries, note=note)


def read_manifest(path: str | Path) -> Manifest:
    """Read a manifest JSON file."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as err:
        raise DataFormatError(f"cannot read the manifest: {err.strerror}", file) from err
    return Manifest.from_json(text, file)


def load_manifest(name: str) -> Manifest:
    """Load the manifest shipped with fedhar for dataset ``name`` (``fedhar/data/manifests``).

    Raises
    ------
    DatasetNotFoundError
        If fedhar ships no manifest for ``name``.
    """
    resource = resources.files("fedhar.data").joinpath("manifests", f"{name}.json")
    if not resource.is_file():
        raise DatasetNotFoundError(f"fedhar ships no manifest for dataset {name!r}", name)
    return Manifest.from_json(resource.read_text(encoding="utf-8"), f"fedhar/data/manifests/{name}.json")


def check_folder(root: str | Path, manifest: Manifest, *, progress: bool = False) -> VerifyReport:
    """Compare the files under ``root`` with ``manifest`` without raising on differences.

    Raises
    ------
    DatasetNotFoundError
        If ``root`` is not a folder.
    """
    base = Path(root)
    if not base.is_dir():
        raise DatasetNotFoundError(f"no {manifest.name} folder here", base)
    checked = 0
    mismatched: list[str] = []
    missing: list[str] = []
    missing_optional: list[str] = []
    for entry in tqdm(manifest.entries, desc=f"verify {manifest.name}", unit="file",
                      disable=not progress, leave=False):
        file = base / entry.path
        if not file.is_file():
            (missing_optional if entry.optional else missing).append(entry.path)
        elif file.stat().st_size != entry.size or hash_file(file) != entry.sha256:
            mismatched.append(entry.path)
        else:
            checked += 1
    extra = tuple(sorted(set(_walk(base)) - manifest.paths))
    return VerifyReport(root=base, manifest=manifest.name, checked=checked, mismatched=tuple(mismatched),
                        missing=tuple(missing), missing_optional=tuple(missing_optional), extra=extra)


def verify_folder(root: str | Path, manifest: Manifest, *, progress: bool = False) -> VerifyReport:
    """Check ``root`` against ``manifest``; extra files only log a warning.

    Parameters
    ----------
    root
        The installed dataset folder (``$FEDHAR_DATA_DIR/UTD-MHAD``).
    manifest
        The expected files.
    progress
        Show a progress bar.

    Returns
    -------
    VerifyReport
        The (passing) report.

    Raises
    ------
    ManifestMismatchError
        If a required file is missing or its bytes differ; the message names the files.
    DatasetNotFoundError
        If ``root`` is not a folder.
    """
    report = check_folder(root, manifest, progress=progress)
    if report.extra:
        logger.warning("%s: %d files not in the %s manifest (ignored): %s", report.root, len(report.extra),
                       manifest.name, _name_some(report.extra))
    if report.missing_optional:
        logger.info("%s: optional files absent: %s", report.root, _name_some(report.missing_optional))
    if not report.ok:
        raise ManifestMismatchError(
            f"files differ from the {manifest.name} manifest: {report.problems()}. "
            f"Re-install the dataset (fedhar-data download {manifest.name} --force)",
            report.root,
        )
    logger.info("%s: %s", report.root, report.summary())
    return report


def _walk(base: Path) -> list[str]:
    """Relative POSIX paths of the files under ``base`` (symlinked folders not followed)."""
    found = []
    for dirpath, _, filenames in os.walk(base):
        for filename in filenames:
            rel = (Path(dirpath) / filename).relative_to(base).as_posix()
            if not any(fnmatch(rel, p) for p in IGNORED):
                found.append(rel)
    return found


def _check_relative(path: str, name: str) -> None:
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or ".." in pure.parts or "\\" in path or ":" in path:
        raise DataFormatError(f"manifest path {path!r} must be relative, '/'-separated, without '..'", name)


def _name_some(paths: tuple[str, ...] | list[str]) -> str:
    shown = ", ".join(paths[:_MAX_NAMED])
    return shown if len(paths) <= _MAX_NAMED else f"{shown} and {len(paths) - _MAX_NAMED} more"
