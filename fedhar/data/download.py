"""Install a dataset: download (or take local) archives, extract safely, verify, move into place atomically."""

from __future__ import annotations

import http.client
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections import Counter, defaultdict
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from fedhar import __version__
from fedhar.data.manifest import Manifest, check_folder, load_manifest
from fedhar.data.sources import DatasetSource, get_source
from fedhar.errors import DataFormatError, DatasetNotFoundError, FedharError, ManifestMismatchError

__all__ = ["download_file", "extract_zip", "fetch_dataset"]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 60.0
_CHUNK = 1 << 20


def fetch_dataset(
    name: str,
    data_dir: str | Path,
    urls: Mapping[str, str] | None = None,
    from_path: str | Path | None = None,
    force: bool = False,
    *,
    manifest: Manifest | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    progress: bool = True,
) -> Path:
    """Install dataset ``name`` as ``data_dir/<folder>`` (``UTD-MHAD``, ``USC-HAD``).

    Everything happens in a temporary folder inside ``data_dir``: the archives are
    downloaded (or taken from ``from_path``), extracted, the dataset's files located
    below whatever top-level folder the archives use, checked against the manifest,
    and only then renamed into place. On any failure the temporary folder is removed
    and nothing is installed.

    Parameters
    ----------
    name
        ``"utd-mhad"`` or ``"usc-had"``.
    data_dir
        Folder holding one folder per dataset (``FEDHAR_DATA_DIR``).
    urls
        Archive file name -> URL, replacing the official URLs (mirrors).
    from_path
        Use local files instead of downloading: a zip archive, a folder holding the
        archives (``Inertial.zip``...), or an already-extracted folder.
    force
        Replace an existing dataset folder.
    manifest
        Expected files; defaults to the manifest shipped with fedhar.
    timeout
        Seconds to wait for the server before giving up on a download.
    progress
        Show progress bars.

    Returns
    -------
    Path
        The installed dataset folder.

    Raises
    ------
    ManifestMismatchError
        If the files obtained differ from the manifest (nothing is installed).
    DatasetNotFoundError
        If a URL is unreachable, ``from_path`` does not exist, or an existing folder
        fails verification and ``force`` is not set.
    DataFormatError
        If an archive is not a zip, is corrupt, or has a member with an unsafe path.
    """
    source = get_source(name).with_urls(urls or {})
    expected = manifest if manifest is not None else load_manifest(name)
    root = Path(data_dir).expanduser()
    dest = root / source.folder
    if (dest.exists() or dest.is_symlink()) and not force:
        report = check_folder(dest, expected, progress=progress)
        if report.ok:
            logger.info("%s is already installed and verified (%s); force=True replaces it", dest, report.summary())
            return dest
        raise DatasetNotFoundError(
            f"the folder exists but does not match the {name} manifest ({report.problems()}); "
            "replace it with --force (force=True)", dest,
        )
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(f".{source.folder}.partial-*"):
        logger.warning("leftover of an interrupted install (delete it): %s", stale)
    work = Path(tempfile.mkdtemp(prefix=f".{source.folder}.partial-", dir=root))
    try:
        origin = str(from_path) if from_path is not None else ", ".join(a.url for a in source.archives)
        search_roots = _gather(source, from_path, work, timeout, progress)
        stage = work / source.folder
        _assemble(source, expected, search_roots, stage)
        report = check_folder(stage, expected, progress=progress)
        if not report.ok:
            raise ManifestMismatchError(
                f"the files obtained differ from the {name} manifest ({report.problems()}); "
                f"nothing was installed in {root}", origin,
            )
        _install(stage, dest, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("installed %s in %s (%d files, %.1f MB, verified)", name, dest, report.checked,
                expected.total_bytes / 1e6)
    return dest


def download_file(
    url: str, dest: str | Path, *, timeout: float = DEFAULT_TIMEOUT_S, progress: bool = True, hint: str = ""
) -> Path:
    """Stream ``url`` into ``dest`` with a progress bar.

    Raises
    ------
    DatasetNotFoundError
        If the server cannot be reached, answers with an error, times out, or sends
        fewer bytes than announced. The message names the URL; ``hint`` is appended.
    """
    out = Path(dest)
    request = urllib.request.Request(url, headers={"User-Agent": f"fedhar/{__version__}"})
    received, total = 0, None
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, open(out, "wb") as fh:
            length = response.headers.get("Content-Length", "")
            total = int(length) if length.isdigit() else None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=out.name,
                      disable=not progress) as bar:
                while chunk := response.read(_CHUNK):
                    fh.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
        raise DatasetNotFoundError(f"cannot download it: {_why(err)}{hint}", url) from err
    if total is not None and received != total:
        raise DatasetNotFoundError(f"download cut short: got {received} of {total} bytes; retry{hint}", url)
    logger.info("downloaded %s (%.1f MB)", url, received / 1e6)
    return out


def extract_zip(archive: str | Path, dest: str | Path) -> Path:
    """Extract every member of ``archive`` below ``dest``, refusing unsafe member paths.

    Raises
    ------
    DataFormatError
        If the file is not a readable zip, a member is corrupt, or a member name is
        absolute or contains ``..`` (zip slip): then nothing is extracted.
    """
    path, out = Path(archive), Path(dest)
    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
            for member in members:
                _check_member(member.filename, path)
            out.mkdir(parents=True, exist_ok=True)
            for member in members:
                zf.extract(member, out)
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:
        raise DataFormatError(f"not a readable zip archive ({err}); download it again", path) from err
    return out


def _gather(
    source: DatasetSource, from_path: str | Path | None, work: Path, timeout: float, progress: bool
) -> list[tuple[Path, bool]]:
    """Folders to look for the dataset's files in, each with whether its files may be moved."""
    extracted = work / "extracted"
    if from_path is None:
        hint = f"; download it in a browser from {source.page} and pass it with --from PATH"
        for archive in source.archives:
            file = download_file(archive.url, work / archive.filename, timeout=timeout, progress=progress,
                                 hint=hint)
            extract_zip(file, extracted / Path(archive.filename).stem)
            file.unlink()
        return [(extracted, True)]
    local = Path(from_path).expanduser()
    if local.is_file():
        extract_zip(local, extracted / local.stem)
        return [(extracted, True)]
    if not local.is_dir():
        raise DatasetNotFoundError(
            f"--from must be a zip archive or a folder (with the archives {[a.filename for a in source.archives]} "
            "or the extracted files); nothing is there", local,
        )
    wanted = {a.filename.lower() for a in source.archives}
    for file in sorted(local.iterdir()):
        if file.is_file() and file.name.lower() in wanted:
            extract_zip(file, extracted / file.stem)
    return [(extracted, True), (local, False)]


def _assemble(source: DatasetSource, manifest: Manifest, roots: list[tuple[Path, bool]], stage: Path) -> None:
    """Move (or copy) the manifest's files from where the archives put them into ``stage``."""
    for archive in source.archives:
        prefix = f"{archive.target}/" if archive.target else ""
        wanted = {e.path[len(prefix):]: e.path for e in manifest.entries if e.path.startswith(prefix)}
        best: tuple[int, Path, bool] | None = None
        for root, owned in roots:
            if root.is_dir():
                found, count = _locate(root, wanted)
                if found is not None and (best is None or count > best[0]):
                    best = (count, found, owned)
        if best is None:
            logger.warning("none of the files of %s were found", archive.filename)
            continue
        count, found, owned = best
        logger.info("taking %d of %d files of %s from %s", count, len(wanted), archive.filename, found)
        for below, rel in wanted.items():
            src = found / below
            if src.is_file():
                target = stage / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                if owned:
                    os.replace(src, target)
                else:
                    shutil.copyfile(src, target)


def _locate(root: Path, wanted: Mapping[str, str]) -> tuple[Path | None, int]:
    """Find the folder under ``root`` below which most of the ``wanted`` relative paths exist."""
    by_name: dict[str, list[str]] = defaultdict(list)
    for below in wanted:
        by_name[PurePosixPath(below).name].append(below)
    hits: Counter[Path] = Counter()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__MACOSX" and not d.startswith("."))
        for filename in filenames:
            for below in by_name.get(filename, ()):
                rel = (Path(dirpath) / filename).relative_to(root).as_posix()
                if rel == below:
                    hits[root] += 1
                elif rel.endswith(f"/{below}"):
                    hits[root / rel[: -len(below) - 1]] += 1
    if not hits:
        return None, 0
    found = max(hits, key=lambda d: (hits[d], -len(d.parts)))
    return found, hits[found]


def _install(stage: Path, dest: Path, work: Path) -> None:
    """Rename ``stage`` to ``dest``; an existing ``dest`` is set aside in ``work`` first."""
    try:
        if dest.exists() or dest.is_symlink():
            old = work / "replaced"
            os.replace(dest, old)
            try:
                os.replace(stage, dest)
            except OSError:
                os.replace(old, dest)
                raise
        else:
            os.replace(stage, dest)
    except OSError as err:
        raise FedharError(f"cannot move the verified files into place: {err}; nothing was changed", dest) from err


def _check_member(name: str, archive: Path) -> None:
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts:
        raise DataFormatError(
            f"archive member {name!r} has an absolute path or '..' and would land outside the extraction "
            "folder; refusing to extract this archive", archive,
        )


def _why(err: BaseException) -> str:
    reason = getattr(err, "reason", None) or err
    text = f"{type(reason).__name__}: {reason}" if not isinstance(err, urllib.error.HTTPError) else str(err)
    if "CERTIFICATE" in text.upper():
        text += " (the server's TLS certificate chain could not be verified)"
    return text
