"""PNG plots of a comparison from hand-made rows and records."""

from __future__ import annotations

from pathlib import Path

from simulations.plots import convergence_panels, plot_accuracy_vs_label_rate, plot_convergence, plot_quality_weights
from simulations.report import summarise

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: A rendered figure is far larger than an empty PNG.
MIN_BYTES = 5_000


def _is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > MIN_BYTES


def _records() -> list[dict]:
    out = []
    for rate in (5, 10):
        for seed in (0, 1):
            out.append({"method": "cosmo", "label_rate": rate, "seed": seed, "status": "done",
                        "accuracy": 0.5 + rate / 100 + seed / 100, "macro_f1": 0.4, "best_epoch_accuracy": 0.6,
                        "curve": {"x_label": "epoch", "what": "test accuracy", "x": [2, 4], "y": [0.3, 0.5]}})
            out.append({"method": "fed-qom", "label_rate": rate, "seed": seed, "status": "done",
                        "accuracy": 0.45, "macro_f1": 0.4, "best_epoch_accuracy": None,
                        "curve": {"x_label": "round", "what": "probe accuracy", "x": [0, 1, 2], "y": [0.2, 0.6, 0.7]}})
    out.append({"method": "fed-fedavg", "label_rate": 5, "seed": 0, "status": "failed", "error": "x"})
    return out


def test_accuracy_vs_label_rate__with_reference_markers(tmp_path: Path) -> None:
    reference = {"label_rates": [5, 10, 20], "systems": {"Cosmo": [60.9, 65.2, 77.0]}, "metric": "best-epoch",
                 "compare_with": {"cosmo": "Cosmo", "absent-method": "Cosmo"}}
    path = plot_accuracy_vs_label_rate(summarise(_records()), reference, tmp_path / "acc.png")
    assert _is_png(path)


def test_accuracy_vs_label_rate__without_reference_and_only_failed_cells(tmp_path: Path) -> None:
    rows = summarise([{"method": "x", "label_rate": 5, "seed": 0, "status": "failed", "error": "e"}])
    assert plot_accuracy_vs_label_rate(rows, None, tmp_path / "acc.png").is_file()


def test_convergence__epochs_and_rounds(tmp_path: Path) -> None:
    assert convergence_panels(_records()) == ["epoch", "round"]
    assert _is_png(plot_convergence(_records(), tmp_path / "conv.png", {"cosmo": "Cosmo"}))


def test_convergence__only_the_panels_with_curves(tmp_path: Path) -> None:
    centralised = [r for r in _records() if r["method"] == "cosmo"]
    federated = [r for r in _records() if r["method"] != "cosmo"]
    assert convergence_panels(centralised) == ["epoch"]
    assert convergence_panels(federated) == ["round"]
    assert convergence_panels(federated[-1:]) == ["epoch"]  # only a failed cell: one empty panel
    assert _is_png(plot_convergence(centralised, tmp_path / "conv.png"))


def test_quality_weights__per_modality_and_client(tmp_path: Path) -> None:
    weights = {str(r): {"inertial": {"1": 0.4, "2": 0.6}, "skeleton": {"1": 0.5 + r / 10, "2": 0.5 - r / 10}}
               for r in (1, 2, 3)}
    assert _is_png(plot_quality_weights(weights, tmp_path / "w.png"))
