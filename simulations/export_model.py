"""Export a federated run's final stage-2 model for devices: TorchScript + ONNX with the run's normalisation statistics.

Reads ``<run-dir>/results.json`` (written by the ServerApp), rebuilds the stage-2 fusion
classifier from the run's resolved config and QoM prior, loads the final weights
(``results.json`` ``stage2.model_file``, or a ``--mode`` of ``stage2_compare``), embeds the
merged normalisation statistics of the run (``normalizer.json``) in both files, and checks
the exported models against PyTorch on raw windows: the held-out test subjects' windows
when the dataset is readable here (then the accuracy is reported too), else random windows
drawn from the statistics. The check goes the way a device goes: raw windows ->
normalisation from the file's metadata -> exported model, against the training pipeline's
``Normalizer`` -> PyTorch model.

Usage::

    python -m simulations.export_model --run-dir $FEDHAR_OUTPUT_DIR/<run-id> [--out DIR] [--windows w.npz]
    python -m simulations.infer --model DIR/model.onnx --data w.npz

Writes ``model.ts``, ``model.onnx``, ``normalizer.json`` and ``export.json`` (the check's
report) into ``--out`` (default ``<run-dir>/export``). Exit codes: 0 ok, 1 the check failed
or a fault (missing file, no stage-2 model), explained on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedhar.data.config import DatasetConfig
from fedhar.data.dataset import DatasetInfo, HARDataset
from fedhar.data.loading import describe_dataset, load_dataset
from fedhar.data.normalization import Normalizer
from fedhar.errors import ExportError, FedharError
from fedhar.export import (
    DEFAULT_ATOL,
    ExportMetadata,
    check_equivalence,
    export_onnx,
    export_torchscript,
    load_exported,
    normalization_of,
)
from fedhar.federated import build_finetune_model, feature_layout_of
from fedhar.models import FusionClassifierModel, ModelConfig
from fedhar.train.checkpoint import atomic_write_text
from fedhar.train.class_stats import LinearFusionHead

__all__ = ["RunModel", "check_windows", "export_run", "load_run_model", "main"]

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
DEFAULT_OUT = "export"
REPORT_FILE = "export.json"
#: Random check windows when the held-out data cannot be read here.
DEFAULT_SAMPLES = 64
LABELS_KEY = "labels"  # as simulations.infer reads it
EXIT_FAULT = 1


@dataclass(frozen=True)
class RunModel:
    """A run's final stage-2 model with what it needs on a device.

    Parameters
    ----------
    model
        The fusion classifier, eval mode, final weights loaded.
    info
        Dataset metadata (modality shapes, class names).
    normalizer
        The run's merged normalisation statistics.
    results
        The run's ``results.json``.
    model_file
        The weights file it was loaded from.
    """

    model: FusionClassifierModel
    info: DatasetInfo
    normalizer: Normalizer
    results: Mapping[str, Any]
    model_file: Path

    @property
    def metadata(self) -> ExportMetadata:
        """Input order, shapes, class names and normalisation statistics for the exported files."""
        names = self.info.modality_names
        return ExportMetadata(names, tuple(self.info.modality(m).shape for m in names), self.info.class_names,
                              normalization_of(self.normalizer, names))

    @property
    def dataset_config(self) -> DatasetConfig:
        """The run's dataset settings."""
        return DatasetConfig.from_mapping(self.results["config"]["dataset"])


def load_run_model(run_dir: Path, mode: str | None = None) -> RunModel:
    """Rebuild the final stage-2 model of the run in ``run_dir``.

    Parameters
    ----------
    run_dir
        ``<paths.output_dir>/<run-id>`` of a finished run.
    mode
        A stage-2 mode of ``stage2_compare`` to export instead of the run's primary stage 2.

    Raises
    ------
    ExportError
        If ``results.json``, the normaliser or the weights are missing, or the stage 2
        asked for kept no single model (``local`` mode: one model per client).
    """
    results_path = run_dir / RESULTS_FILE
    if not results_path.is_file():
        raise ExportError(f"no {RESULTS_FILE}: not the folder of a finished fedhar run", run_dir)
    results = json.loads(results_path.read_text(encoding="utf-8"))
    stage2 = results["stage2"] if mode is None else results.get("stage2_compare", {}).get(mode)
    if stage2 is None:
        raise ExportError(f"the run has no stage 2 {mode!r}; it ran {results['stage2'].get('mode')!r} and "
                          f"compared {sorted(results.get('stage2_compare', {}))}", results_path)
    if not stage2.get("model_file"):
        raise ExportError(f"stage 2 {stage2.get('mode')!r} kept no single model to export (local mode keeps one "
                          "per client); export a federated or centralized stage 2", results_path)
    norm = results.get("normalization")
    if not norm:
        raise ExportError("results.json has no normalisation statistics (a run from before the normalisation "
                          "round); rerun it", results_path)
    normalizer = Normalizer.load(run_dir / norm["file"])
    cfg = results["config"]
    info = describe_dataset(DatasetConfig.from_mapping(cfg["dataset"]))
    model_cfg = ModelConfig.from_mapping(cfg["model"])
    model = build_finetune_model(info, info.modality_names, model_cfg, results["qom_prior"])
    if stage2.get("mode") == "lda":  # the closed-form linear head replaces the fusion classifier
        model = FusionClassifierModel(model.encoders, LinearFusionHead(feature_layout_of(info, model_cfg),
                                                                       info.num_classes))
    weights = run_dir / stage2["model_file"]
    if not weights.is_file():
        raise ExportError("the stage-2 weights are missing", weights)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model.eval()
    logger.info("run %s: stage 2 %s model from %s", results.get("run_id"), stage2.get("mode"), weights)
    return RunModel(model, info, normalizer, results, weights)


def check_windows(run: RunModel, samples: int = DEFAULT_SAMPLES, seed: int = 0
                  ) -> tuple[dict[str, np.ndarray], np.ndarray | None, str]:
    """Raw windows to check the export on: the held-out test subjects' if readable, else random.

    Returns
    -------
    windows
        Modality -> ``(N, *shape)`` float32 raw (un-normalised) windows.
    labels
        ``(N,)`` labels of the test windows, or ``None`` for random ones.
    source
        ``"test subjects [..]"`` or ``"random"``.
    """
    test_subjects = [int(s) for s in run.results.get("test_subjects", [])]
    try:
        data = load_dataset(run.dataset_config, subjects=test_subjects)
        return {m: np.asarray(data.data[m]) for m in run.info.modality_names}, data.labels, \
            f"test subjects {test_subjects}"
    except (FedharError, OSError) as err:
        logger.warning("held-out data not readable here (%s); checking on %d random windows", err, samples)
    rng = np.random.default_rng(seed)
    windows = {}
    for m in run.info.modality_names:
        shape = run.info.modality(m).shape
        mean, std = run.normalizer.stats.mean(m), run.normalizer.stats.std(m)
        windows[m] = (mean + std * rng.standard_normal((samples, *shape))).astype(np.float32)
    return windows, None, "random"


def export_run(run_dir: Path, out: Path, mode: str | None = None, samples: int = DEFAULT_SAMPLES,
               atol: float = DEFAULT_ATOL, windows_file: Path | None = None) -> dict[str, Any]:
    """Export the run's final stage-2 model as TorchScript and ONNX and check both; returns the report.

    Raises
    ------
    ExportError
        See :func:`load_run_model`; or the embedded statistics do not reproduce the run's
        normalisation, or an exported model disagrees with PyTorch beyond ``atol``.
    """
    run = load_run_model(run_dir, mode)
    meta = run.metadata
    out.mkdir(parents=True, exist_ok=True)
    paths = {"torchscript": export_torchscript(run.model, meta, out / "model.ts"),
             "onnx": export_onnx(run.model, meta, out / "model.onnx")}
    shutil.copyfile(run_dir / run.results["normalization"]["file"], out / "normalizer.json")
    raw, labels, source = check_windows(run, samples)
    if windows_file is not None:
        np.savez(windows_file, **raw, **({LABELS_KEY: labels} if labels is not None else {}))  # type: ignore[arg-type]  # numpy's stub: a **dict might set allow_pickle
    names = run.info.modality_names
    first = next(iter(raw.values()))
    dataset = _as_dataset(run.info, raw, labels if labels is not None else np.zeros(len(first), np.int64))
    expected = run.normalizer.apply(dataset)
    fed = meta.normalize(raw)
    norm_diff = max(float(np.abs(fed[m] - expected.data[m]).max()) for m in names)
    report: dict[str, Any] = {"run_id": run.results.get("run_id"), "model_file": run.model_file.name,
                              "check_windows": source, "num_windows": len(first), "atol": atol,
                              "normalization_max_abs_diff": norm_diff, "formats": {}}
    with torch.no_grad():
        torch_pred = run.model({m: torch.from_numpy(expected.data[m]) for m in names}).argmax(1).numpy()
    if labels is not None:
        report["pytorch_accuracy"] = float(np.mean(torch_pred == labels))
        report["run_final_accuracy"] = run.results.get("final", {}).get("accuracy")
    for fmt, path in paths.items():
        runner, loaded = load_exported(path)
        equivalence = check_equivalence(run.model, runner, fed)
        entry = {"file": path.name, **asdict(equivalence), "passed": equivalence.passed(atol)}
        if labels is not None:
            entry["accuracy"] = float(np.mean(runner(loaded.normalize(raw)).argmax(1) == labels))
        report["formats"][fmt] = entry
    report["passed"] = norm_diff == 0.0 and all(f["passed"] for f in report["formats"].values())
    atomic_write_text(out / REPORT_FILE, json.dumps(report, indent=2))
    if norm_diff != 0.0:
        raise ExportError(f"the embedded statistics do not reproduce the run's normalisation (max |diff| "
                          f"{norm_diff:.2e})", out / REPORT_FILE)
    failed = [f for f, e in report["formats"].items() if not e["passed"]]
    if failed:
        raise ExportError(f"{failed} disagree with PyTorch beyond {atol:g} or in a prediction; see the report",
                          out / REPORT_FILE)
    return report


def _as_dataset(info: DatasetInfo, data: Mapping[str, np.ndarray], labels: np.ndarray) -> HARDataset:
    """Windows as a dataset, for the training pipeline's ``Normalizer.apply``."""
    n = len(labels)
    return HARDataset(info, dict(data), np.asarray(labels, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64))


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, required=True, help="<paths.output_dir>/<run-id> of a finished run")
    parser.add_argument("--out", type=Path, help=f"output folder (default <run-dir>/{DEFAULT_OUT})")
    parser.add_argument("--mode", help="export this stage-2 mode of stage2_compare instead of the primary one")
    parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, help="random windows if no test data here")
    parser.add_argument("--atol", type=float, default=DEFAULT_ATOL,
                        help="largest allowed |logit difference| (times the largest |logit| when that exceeds 1)")
    parser.add_argument("--windows", type=Path, help="also write the raw check windows (+ labels) as .npz for infer")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = args.out or args.run_dir / DEFAULT_OUT
    try:
        report = export_run(args.run_dir, out, args.mode, args.samples, args.atol, args.windows)
    except (FedharError, ValueError) as err:
        logger.error("%s", err)
        return EXIT_FAULT
    summary = ", ".join(f"{fmt} max |diff| {e['max_abs_diff']:.1e}, agreement {e['agreement']:.3f}"
                        + (f", accuracy {e['accuracy']:.3f}" if "accuracy" in e else "")
                        for fmt, e in report["formats"].items())
    sys.stdout.write(f"exported {out / 'model.ts'} and {out / 'model.onnx'} ({report['num_windows']} windows of "
                     f"{report['check_windows']}: {summary})\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
