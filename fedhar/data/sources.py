"""Where each dataset is published: official archive URLs and the folder each one fills."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from fedhar.errors import ConfigError

__all__ = ["SOURCES", "ArchiveSource", "DatasetSource", "get_source"]


@dataclass(frozen=True)
class ArchiveSource:
    """One downloadable archive of a dataset.

    Parameters
    ----------
    filename
        The archive's file name as published (``"Inertial.zip"``); ``--url`` and
        ``--from`` match archives by this name.
    url
        Where it is downloaded from.
    target
        Sub-folder of the dataset folder this archive's files belong in (``"Inertial"``),
        ``""`` when it holds the whole dataset. Whatever top-level folder the archive
        itself uses is ignored: files are matched by their path below ``target``.
    """

    filename: str
    url: str
    target: str = ""


@dataclass(frozen=True)
class DatasetSource:
    """A dataset's official archives and the folder it is installed as.

    Parameters
    ----------
    name
        Dataset name as in ``configs/dataset`` (``"utd-mhad"``).
    folder
        Folder name under the data directory (``"UTD-MHAD"``), as ``configs/dataset``
        expects (``root: ${paths.data_dir}/UTD-MHAD``).
    archives
        The archives that together make up the dataset.
    page
        The dataset's official web page (for error messages and manual download).
    optional
        Relative paths listed in the manifest that some official copies lack (checked
        when present, not required).
    """

    name: str
    folder: str
    archives: tuple[ArchiveSource, ...]
    page: str
    optional: tuple[str, ...] = ()

    def archive(self, filename: str) -> ArchiveSource:
        """Look up the archive called ``filename`` (case-insensitive, ``.zip`` optional)."""
        wanted = _normalise(filename)
        for archive in self.archives:
            if _normalise(archive.filename) == wanted:
                return archive
        names = [a.filename for a in self.archives]
        raise ConfigError(f"{self.name} has no archive {filename!r}; its archives are {names}", filename)

    def with_urls(self, urls: Mapping[str, str]) -> DatasetSource:
        """Return a copy whose archives named in ``urls`` (filename -> URL) use those URLs.

        Raises
        ------
        ConfigError
            If ``urls`` names an archive this dataset does not have.
        """
        chosen = {self.archive(name).filename: url for name, url in urls.items()}
        archives = tuple(replace(a, url=chosen.get(a.filename, a.url)) for a in self.archives)
        return replace(self, archives=archives)


def _normalise(filename: str) -> str:
    name = filename.strip().lower()
    return name if name.endswith(".zip") else f"{name}.zip"


# UTD-MHAD: the page links https://personal.utdallas.edu/~kehtar/UTD-MAD/<Modality>.zip
# (note "UTD-MAD" in the path). Skeleton_joint_order.txt ships in Sample_Code.zip there,
# not in Skeleton.zip, so it is optional.
_UTD_BASE = "https://personal.utdallas.edu/~kehtar/UTD-MAD"
SOURCES: Mapping[str, DatasetSource] = {
    "utd-mhad": DatasetSource(
        name="utd-mhad",
        folder="UTD-MHAD",
        archives=(
            ArchiveSource("Inertial.zip", f"{_UTD_BASE}/Inertial.zip", "Inertial"),
            ArchiveSource("Skeleton.zip", f"{_UTD_BASE}/Skeleton.zip", "Skeleton"),
        ),
        page="https://personal.utdallas.edu/~kehtar/UTD-MHAD.html",
        optional=("Skeleton/Skeleton_joint_order.txt",),
    ),
    "usc-had": DatasetSource(
        name="usc-had",
        folder="USC-HAD",
        archives=(ArchiveSource("USC-HAD.zip", "https://sipi.usc.edu/had/USC-HAD.zip", ""),),
        page="https://sipi.usc.edu/had/",
    ),
}


def get_source(name: str) -> DatasetSource:
    """Look up the published source of dataset ``name``.

    Raises
    ------
    ConfigError
        If ``name`` is not a downloadable dataset.
    """
    try:
        return SOURCES[name]
    except KeyError:
        raise ConfigError(
            f"no download source for dataset {name!r}; choose one of {sorted(SOURCES)}", name
        ) from None
