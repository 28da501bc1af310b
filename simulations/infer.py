"""Classify windows on a device with an exported model (TorchScript ``.ts`` or ONNX ``.onnx``).

On-device data format: an ``.npz`` file holding one float32 array per modality, named
after the modality and shaped ``(N, *shape)`` with the per-sample shape the model was
exported with (time first; e.g. UTD ``inertial`` ``(N, 120, 6)``, ``skeleton``
``(N, 40, 20, 3)``), preprocessed as the dataset reader does (resampled / windowed, not
normalised). A model exported from a run (``python -m simulations.export_model``) carries
the run's normalisation statistics and normalises the windows itself; pass
``--normalized`` for windows that are normalised already (a model without statistics
always takes normalised windows). An optional ``labels`` array ``(N,)`` (int, 0-based)
makes the command also report accuracy. With ``--data DIR``, every ``*.npz`` file in
``DIR`` is classified.

Usage::

    python -m simulations.infer --model model.onnx --data windows.npz [--normalized] [--batch-size 64] [--json out.json]

Prints one line per window: ``<file>:<index> <class index> <class name> <confidence>``.
Exit codes: 0 ok, 1 a fault (missing file, missing modality, wrong shape), explained on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedhar.errors import DatasetNotFoundError, FedharError, ModalityMissingError
from fedhar.export import ExportMetadata, load_exported
from fedhar.train.checkpoint import atomic_write_text

__all__ = ["classify", "load_windows", "main"]

logger = logging.getLogger(__name__)

LABELS_KEY = "labels"
DEFAULT_BATCH = 64
EXIT_FAULT = 1


def load_windows(path: Path, meta: ExportMetadata) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Read one ``.npz`` file and check it against the model's modalities and shapes.

    Raises
    ------
    DatasetNotFoundError
        If the file is missing or not an ``.npz`` archive.
    ModalityMissingError
        If a modality the model needs is absent.
    ValueError
        If an array has the wrong per-sample shape, or the arrays disagree on ``N``.
    """
    if not path.is_file():
        raise DatasetNotFoundError("data file not found", path)
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DatasetNotFoundError(f"not an .npz archive ({err})", path) from err
    with archive:
        missing = [m for m in meta.modalities if m not in archive.files]
        if missing:
            raise ModalityMissingError(f"modalities {missing} are missing on this device; the model needs "
                                       f"{list(meta.modalities)}, the file holds {archive.files}", path)
        data = {m: np.asarray(archive[m], dtype=np.float32) for m in meta.modalities}
        labels = np.asarray(archive[LABELS_KEY]) if LABELS_KEY in archive.files else None
    for (modality, array), shape in zip(data.items(), meta.shapes, strict=True):
        if array.shape[1:] != tuple(shape):
            raise ValueError(f"{path}: {modality!r} has per-sample shape {array.shape[1:]}, the model expects "
                             f"{tuple(shape)}")
    sizes = {len(a) for a in data.values()} | ({len(labels)} if labels is not None else set())
    if len(sizes) != 1:
        raise ValueError(f"{path}: arrays disagree on the number of windows: {sizes}")
    return data, labels


def classify(model: Path, files: Sequence[Path], batch_size: int = DEFAULT_BATCH,
             normalized: bool = False) -> list[dict[str, object]]:
    """Predictions for every window of ``files``: file, index, class, class name, confidence (softmax).

    Raw windows are normalised with the statistics embedded in the model, unless
    ``normalized`` says they already are (or the model carries none).
    """
    runner, meta = load_exported(model)
    normalize = bool(meta.normalization) and not normalized
    logger.info("%s: %s", model, "normalising raw windows with the embedded training statistics" if normalize
                else "windows are taken as normalised")
    rows: list[dict[str, object]] = []
    for path in files:
        data, labels = load_windows(path, meta)
        if normalize:
            data = meta.normalize(data)
        count = len(next(iter(data.values())))
        for start in range(0, count, batch_size):
            logits = runner({m: a[start:start + batch_size] for m, a in data.items()})
            probs = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs /= probs.sum(axis=1, keepdims=True)
            for offset, (cls, conf) in enumerate(zip(probs.argmax(1), probs.max(1), strict=True)):
                i = start + offset
                name = meta.class_names[cls] if cls < len(meta.class_names) else str(cls)
                row: dict[str, object] = {"file": str(path), "index": i, "class": int(cls), "name": name,
                                          "confidence": float(conf)}
                if labels is not None:
                    row["label"] = int(labels[i])
                rows.append(row)
    return rows


def _files(data: Path) -> list[Path]:
    if data.is_dir():
        files = sorted(data.glob("*.npz"))
        if not files:
            raise DatasetNotFoundError("data folder holds no .npz file", data)
        return files
    return [data]


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="exported model (.ts or .onnx)")
    parser.add_argument("--data", type=Path, required=True, help=".npz file or a folder of them")
    parser.add_argument("--normalized", action="store_true",
                        help="the windows are normalised already (do not apply the model's embedded statistics)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH)
    parser.add_argument("--json", type=Path, help="also write the predictions as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        rows = classify(args.model, _files(args.data), args.batch_size, normalized=args.normalized)
    except (FedharError, ValueError) as err:
        logger.error("%s", err)
        return EXIT_FAULT
    for row in rows:
        sys.stdout.write(f"{Path(str(row['file'])).name}:{row['index']} {row['class']} {row['name']} "
                         f"{row['confidence']:.3f}\n")
    labelled = [r for r in rows if "label" in r]
    if labelled:
        accuracy = float(np.mean([r["class"] == r["label"] for r in labelled]))
        logger.info("accuracy %.3f over %d labelled windows", accuracy, len(labelled))
    if args.json:
        atomic_write_text(args.json, json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
