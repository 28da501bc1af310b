"""``fedhar-data``: download, verify, describe the datasets and rebuild their manifests."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedhar.data.config import DATASET_NAMES, DatasetConfig
from fedhar.data.download import DEFAULT_TIMEOUT_S, fetch_dataset
from fedhar.data.manifest import Manifest, build_manifest, load_manifest, read_manifest, verify_folder
from fedhar.data.sources import SOURCES, get_source
from fedhar.errors import ConfigError, DatasetNotFoundError, FedharError

logger = logging.getLogger("fedhar-data")

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
MANIFEST_DIR = Path(__file__).resolve().parents[1] / "fedhar" / "data" / "manifests"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def default_data_dir() -> Path:
    """``$FEDHAR_DATA_DIR``, else ``~/.cache/fedhar/data`` (as configs/paths/default.yaml)."""
    env = os.environ.get("FEDHAR_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fedhar" / "data"


def build_parser() -> argparse.ArgumentParser:
    """Build the ``fedhar-data`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="fedhar-data", description="Download, verify and describe the datasets; rebuild their manifests."
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True)
    downloadable = sorted(SOURCES)
    data_dir_help = "folder holding one folder per dataset (default: $FEDHAR_DATA_DIR or ~/.cache/fedhar/data)"

    p = sub.add_parser("download", help="download (or import with --from), verify and install a dataset")
    p.add_argument("name", choices=downloadable)
    p.add_argument("--data-dir", type=Path, default=None, help=data_dir_help)
    p.add_argument("--url", action="append", default=[], metavar="ARCHIVE=URL",
                   help="download ARCHIVE (e.g. Inertial.zip) from URL instead; repeatable")
    p.add_argument("--from", dest="from_path", type=Path, default=None, metavar="PATH",
                   help="use a local zip archive, a folder with the archives, or an extracted folder")
    p.add_argument("--force", action="store_true", help="replace an existing dataset folder")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds to wait for a server")
    p.add_argument("--manifest", type=Path, default=None, help="verify against this manifest file instead")

    p = sub.add_parser("verify", help="check an installed dataset against its SHA-256 manifest")
    p.add_argument("name", choices=downloadable)
    p.add_argument("--data-dir", type=Path, default=None, help=data_dir_help)
    p.add_argument("--manifest", type=Path, default=None, help="verify against this manifest file instead")

    p = sub.add_parser("manifest", help="manifest tools")
    msub = p.add_subparsers(dest="manifest_command", required=True)
    b = msub.add_parser("build", help="hash a dataset folder as published into a manifest")
    b.add_argument("name", choices=downloadable)
    b.add_argument("path", type=Path, help="the dataset folder (e.g. .../UTD-MHAD)")
    b.add_argument("--out", type=Path, default=None, help="output file (default: the manifest fedhar ships)")
    b.add_argument("--note", default=None, help="provenance note (default: keep the note of --out)")

    p = sub.add_parser("describe", help="subjects, classes, samples, modalities and split sizes of a dataset")
    p.add_argument("name", choices=DATASET_NAMES)
    p.add_argument("--data-dir", type=Path, default=None, help=data_dir_help)
    p.add_argument("--protocol", default=None, help="protocol preset (default: the dataset config's)")
    p.add_argument("--seed", type=int, default=None, help="seed of the label splits (default: the config's)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the preprocessed cache")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the description here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``fedhar-data``; returns the exit code (0 ok, 1 failed, 2 bad usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(message)s")
    try:
        if args.command == "download":
            return _download(args, parser)
        if args.command == "verify":
            return _verify(args)
        if args.command == "manifest":
            return _build(args)
        return _describe(args)
    except ConfigError as err:
        print(f"fedhar-data: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except FedharError as err:
        print(f"fedhar-data: error: {err}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("fedhar-data: interrupted; nothing was installed", file=sys.stderr)
        return EXIT_FAILED


def _download(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    urls = {}
    for item in args.url:
        archive, sep, url = item.partition("=")
        if not sep or not archive or not url:
            parser.error(f"--url expects ARCHIVE=URL (e.g. Inertial.zip=https://...), got {item!r}")
        urls[archive] = url
    dest = fetch_dataset(args.name, args.data_dir or default_data_dir(), urls=urls, from_path=args.from_path,
                         force=args.force, manifest=_manifest(args), timeout=args.timeout,
                         progress=not args.quiet)
    print(f"{args.name}: ready in {dest}")
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    folder = (args.data_dir or default_data_dir()) / get_source(args.name).folder
    report = verify_folder(folder, _manifest(args), progress=not args.quiet)
    print(f"{args.name}: {report.summary()} ({folder})")
    return EXIT_OK


def _build(args: argparse.Namespace) -> int:
    source = get_source(args.name)
    out = args.out or MANIFEST_DIR / f"{args.name}.json"
    note = args.note
    if note is None:
        note = read_manifest(out).note if out.is_file() else ""
    manifest = build_manifest(args.name, args.path, folder=source.folder, optional=source.optional, note=note)
    manifest.save(out)
    print(f"{args.name}: {len(manifest.entries)} files ({manifest.total_bytes / 1e6:.1f} MB) -> {out}")
    return EXIT_OK


def _manifest(args: argparse.Namespace) -> Manifest:
    return read_manifest(args.manifest) if args.manifest else load_manifest(args.name)


def _describe(args: argparse.Namespace) -> int:
    # Imported here: only `describe` needs Hydra and the loaders.
    from fedhar.data.loading import load_dataset
    from fedhar.data.protocol import resolve_protocol
    from fedhar.data.splits import split_sizes

    cfg, seed = compose_dataset_config(args.name, args.data_dir, args.protocol, args.seed, cache=not args.no_cache)
    try:
        dataset = load_dataset(cfg)
    except DatasetNotFoundError as err:
        if args.name not in SOURCES:
            raise
        raise DatasetNotFoundError(f"{err.reason}; install it with `fedhar-data download {args.name}` "
                                   "(--data-dir, --from)", err.culprit) from err
    protocol = resolve_protocol(cfg, dataset.info)
    description = describe_dataset(dataset, cfg, seed)
    description["protocol"] = {"name": cfg.protocol, "train_subjects": list(protocol.train_subjects),
                               "test_subjects": list(protocol.test_subjects)}
    description["splits"] = split_sizes(dataset, protocol, cfg, seed)
    print(format_description(description))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
        print(f"written to {args.json}")
    return EXIT_OK


def compose_dataset_config(
    name: str, data_dir: Path | None, protocol: str | None, seed: int | None, cache: bool = True
) -> tuple[DatasetConfig, int]:
    """Compose ``configs/config.yaml`` with ``dataset=name`` into a :class:`DatasetConfig` and the seed.

    Raises
    ------
    ConfigError
        If configs/ is missing or the composition fails (unknown protocol, bad value).
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if not (CONFIG_DIR / "config.yaml").is_file():
        raise ConfigError("describe needs the repository's configs/ folder next to simulations/", CONFIG_DIR)
    overrides = [f"dataset={name}"]
    if seed is not None:
        overrides.append(f"seed={seed}")
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
            cfg = compose("config", overrides=overrides)
        if data_dir is not None:
            cfg.paths.data_dir = str(Path(data_dir).expanduser().resolve())
        if protocol is not None:
            cfg.dataset.protocol = protocol
        plain: Any = OmegaConf.to_container(cfg, resolve=True)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(f"cannot compose the {name} config: {err}".replace("\n", " "), CONFIG_DIR) from err
    cache_dir = plain["paths"].get("cache_dir") if cache else None
    dataset_cfg = DatasetConfig.from_mapping(plain["dataset"], cache_dir=cache_dir)
    return dataset_cfg, int(plain.get("seed", 0))


def describe_dataset(dataset: Any, cfg: DatasetConfig, seed: int) -> dict[str, Any]:
    """Count the samples of a loaded :class:`~fedhar.data.HARDataset` (plain JSON-able values)."""
    info = dataset.info
    subjects = [int(s) for s in info.subjects]
    table = np.zeros((len(subjects), info.num_classes), dtype=np.int64)
    row = {s: i for i, s in enumerate(subjects)}
    for subject, label in zip(dataset.subjects.tolist(), dataset.labels.tolist(), strict=True):
        table[row[subject], label] += 1
    return {
        "dataset": info.name,
        "root": None if cfg.root is None else str(cfg.root),
        "samples": len(dataset),
        "subjects": subjects,
        "classes": list(info.class_names),
        "modalities": [{"name": m.name, "shape": list(m.shape), "sample_rate_hz": m.sample_rate_hz}
                       for m in info.modalities],
        "samples_per_subject": {str(s): int(n) for s, n in zip(subjects, table.sum(axis=1), strict=True)},
        "samples_per_class": {c: int(n) for c, n in zip(info.class_names, table.sum(axis=0), strict=True)},
        "samples_per_subject_class": table.tolist(),
        "label_scheme": cfg.label_scheme,
        "seed": seed,
    }


def format_description(d: dict[str, Any]) -> str:
    """Render :func:`describe_dataset` output (+ protocol and splits) as text tables."""
    subjects, classes = d["subjects"], d["classes"]
    lines = [f"{d['dataset']}: {d['samples']} samples, {len(subjects)} subjects, {len(classes)} classes"
             + (f" ({d['root']})" if d["root"] else "")]
    lines.append("modalities: " + ", ".join(
        f"{m['name']} {tuple(m['shape'])} @ {m['sample_rate_hz']:g} Hz" for m in d["modalities"]))
    width = max(len(c) for c in classes) + 5
    header = f"{'class':<{width}}" + "".join(f"{'s' + str(s):>5}" for s in subjects) + f"{'total':>7}"
    lines += ["", "samples per class (rows) and subject (columns):", header]
    table = d["samples_per_subject_class"]
    for k, name in enumerate(classes):
        counts = [table[i][k] for i in range(len(subjects))]
        lines.append(f"{k + 1:>3}  {name:<{width - 5}}" + "".join(f"{n:>5}" for n in counts) + f"{sum(counts):>7}")
    lines.append(f"{'total':<{width}}" + "".join(f"{d['samples_per_subject'][str(s)]:>5}" for s in subjects)
                 + f"{d['samples']:>7}")
    if "protocol" in d:
        p = d["protocol"]
        lines += ["", (f"protocol {p['name']!r}: train subjects {p['train_subjects']}, "
                       f"test subjects {p['test_subjects']}")]
    if "splits" in d:
        lines += [f"label splits ({d['label_scheme']}, seed {d['seed']}):",
                  f"{'rate %':>8}{'labeled':>10}{'unlabeled':>11}{'test':>7}{'per class':>11}"]
        for s in d["splits"]:
            per_class = f"{s['labeled_per_class_min']}-{s['labeled_per_class_max']}"
            lines.append(f"{s['label_rate']:>8g}{s['labeled']:>10}{s['unlabeled']:>11}{s['test']:>7}{per_class:>11}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
