"""PNG plots of a comparison (matplotlib, Agg backend).

- :func:`plot_accuracy_vs_label_rate`: last-epoch accuracy (mean +- std over seeds) per
  method, with the paper's numbers (configs/reference_results/<dataset>.yaml, best-epoch
  accuracy as the paper reports it) as hollow reference markers.
- :func:`plot_convergence`: accuracy vs epoch (centralised cells: stage-2 / supervised test
  accuracy) and vs round (federated cells: stage-1 linear-probe accuracy), from the
  ``curve`` of each cell record.
- :func:`plot_quality_weights`: per-client aggregation weight per round and modality of a
  federated cell (the ``weights`` of its record).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after the backend is chosen

from simulations.grid import DONE

__all__ = ["convergence_panels", "plot_accuracy_vs_label_rate", "plot_convergence", "plot_quality_weights"]

logger = logging.getLogger(__name__)

PERCENT = 100.0
DPI = 120
FIGSIZE = (7.0, 4.5)
WIDE_FIGSIZE = (11.0, 4.5)
CAPSIZE = 3


def _save(fig: Any, path: Path) -> Path:
    """Save ``fig`` to ``path`` atomically (temporary file, then rename) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=DPI, bbox_inches="tight", format="png")
    plt.close(fig)
    tmp.replace(path)
    return path


def plot_accuracy_vs_label_rate(rows: Sequence[Mapping[str, Any]], reference: Mapping[str, Any] | None,
                                path: Path, title: str = "") -> Path:
    """Accuracy vs label rate per method (summary rows of simulations.report) plus the paper's markers.

    Parameters
    ----------
    rows
        Rows of :func:`simulations.report.summarise` (groups with no finished seed are skipped).
    reference
        ``label_rates``, ``systems`` (name -> accuracies %) and ``compare_with`` (method ->
        system) of a reference_results config, or ``None``.
    path
        The PNG to write.
    title
        Figure title.
    """
    fig, ax = plt.subplots(figsize=FIGSIZE)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    colours = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    for method in methods:
        pts = sorted((r["label_rate"], r["accuracy"]) for r in rows
                     if r["method"] == method and r["seeds_done"] and r["accuracy"] is not None)
        if not pts:
            continue
        label = next(r["label"] for r in rows if r["method"] == method)
        ax.errorbar([p[0] for p in pts], [p[1][0] for p in pts], yerr=[p[1][1] for p in pts], marker="o",
                    capsize=CAPSIZE, color=colours[method], label=f"{label} (last epoch)")
    if reference:
        rates = list(reference["label_rates"])
        drawn: set[str] = set()
        for method, system in (reference.get("compare_with") or {}).items():
            if method not in colours or system in drawn or system not in reference["systems"]:
                continue
            drawn.add(system)
            ax.plot(rates, reference["systems"][system], linestyle="none", marker="s", markerfacecolor="none",
                    color=colours[method], label=f"paper: {system} ({reference.get('metric', 'accuracy')})")
    ax.set_xlabel("label rate %")
    ax.set_ylabel("test accuracy %")
    ax.set_title(title or "accuracy vs label rate")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    return _save(fig, path)


def _curves(records: Sequence[Mapping[str, Any]]) -> Iterator[tuple[Mapping[str, Any], Mapping[str, Any], str]]:
    """``(record, curve, panel)`` of every finished cell with a curve; panel ``round`` or ``epoch``."""
    for rec in records:
        curve = rec.get("curve")
        if rec.get("status") == DONE and curve and curve.get("x"):
            yield rec, curve, "round" if curve.get("x_label") == "round" else "epoch"


def convergence_panels(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The x axes that finished cells have curves for, epochs first: a comparison without
    federated cells gets no empty round panel."""
    kinds = {panel for _, _, panel in _curves(records)}
    return [name for name in ("epoch", "round") if name in kinds] or ["epoch"]


def plot_convergence(records: Sequence[Mapping[str, Any]], path: Path, labels: Mapping[str, str] | None = None,
                     title: str = "") -> Path:
    """Accuracy vs epoch (centralised) and vs round (federated) of every finished cell with a curve."""
    labels = labels or {}
    panels = convergence_panels(records)
    fig, axes = plt.subplots(1, len(panels), figsize=(WIDE_FIGSIZE[0] * len(panels) / 2, WIDE_FIGSIZE[1]),
                             squeeze=False)
    by_panel = dict(zip(panels, axes[0]))
    methods = list(dict.fromkeys(r["method"] for r in records))
    colours = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    seen: set[tuple[str, str]] = set()
    for rec, curve, panel in _curves(records):
        ax = by_panel[panel]
        key = (rec["method"], panel)
        label = None if key in seen else labels.get(rec["method"], rec["method"])
        seen.add(key)
        ax.plot(curve["x"], [PERCENT * y for y in curve["y"]], color=colours[rec["method"]], alpha=0.8,
                marker=".", label=label)
        if curve.get("what"):
            ax.set_ylabel(f"{curve['what']} %")
    x_labels = {"epoch": "epoch (centralised)", "round": "round (federated stage 1)"}
    for name, ax in by_panel.items():
        ax.set_xlabel(x_labels[name])
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    fig.suptitle(title or "convergence")
    return _save(fig, path)


def plot_quality_weights(weights: Mapping[str, Mapping[str, Mapping[str, float]]], path: Path,
                         title: str = "") -> Path:
    """Per-client aggregation weight per round, one panel per modality.

    Parameters
    ----------
    weights
        ``{round: {modality: {client: weight}}}`` (rounds as strings or numbers).
    path
        The PNG to write.
    title
        Figure title.
    """
    rounds = sorted(weights, key=lambda r: int(r))
    modalities = sorted({m for r in rounds for m in weights[r]})
    fig, axes = plt.subplots(1, max(1, len(modalities)), figsize=WIDE_FIGSIZE, squeeze=False)
    for ax, modality in zip(axes[0], modalities, strict=False):
        clients = sorted({c for r in rounds for c in weights[r].get(modality, {})}, key=_client_order)
        for client in clients:
            pts = [(int(r), weights[r][modality][client]) for r in rounds if client in weights[r].get(modality, {})]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"client {client}")
        ax.set_title(modality)
        ax.set_xlabel("round")
        ax.set_ylabel("aggregation weight")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")
    fig.suptitle(title or "per-client aggregation weights")
    return _save(fig, path)


def _client_order(client: str) -> tuple[int, str]:
    return (int(client), client) if str(client).isdigit() else (0, str(client))
