"""Results tables of a comparison: markdown and CSV, mean +- std over seeds, failed cells shown as failed.

Input: cell records (simulations/grid.py) with ``method``, ``label_rate``, ``seed``,
``status`` and, when done, ``accuracy`` and ``macro_f1`` (last epoch, test subjects,
fractions), optionally ``bytes_per_client_round`` (federated cells: down + up per client
and round of the stage that produced the accuracy) and ``best_epoch_accuracy`` (max over evaluated epochs: selects on
the test set, shown only in its own labelled column, for comparison with the Cosmo paper).
Statistics use the finished seeds only; a group with failed seeds says so in its status
column, and a group with no finished seed shows ``FAILED`` instead of numbers.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fedhar.train.checkpoint import atomic_write_text
from simulations.grid import DONE, FAILED, mean_std

__all__ = ["TABLE_CSV", "TABLE_MD", "summarise", "to_csv", "to_markdown", "write_report"]

PERCENT = 100.0
TABLE_MD = "table.md"
TABLE_CSV = "table.csv"
SUMMARY_JSON = "summary.json"
FAILED_TEXT = "FAILED"
NOT_AVAILABLE = "n/a"
#: Characters of a failed cell's error shown in the markdown table.
ERROR_CHARS = 80
CSV_FIELDS = ("label_rate", "method", "label", "status", "seeds_done", "seeds_failed", "accuracy_mean",
              "accuracy_std", "macro_f1_mean", "macro_f1_std", "best_epoch_accuracy_mean",
              "best_epoch_accuracy_std", "wall_s_mean", "wall_s_std", "mb_per_client_round", "error")
MB = 1e6


def _stat(records: Sequence[Mapping[str, Any]], key: str) -> tuple[float, float] | None:
    values = [PERCENT * float(r[key]) for r in records if r.get(key) is not None]
    # Every finished seed must have the value, else the mean would mix populations.
    return mean_std(values) if values and len(values) == len(records) else None


def summarise(records: Iterable[Mapping[str, Any]], order: Sequence[str] = (),
              labels: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """One row per (label rate, method): statistics over its finished seeds, its failures.

    Parameters
    ----------
    records
        Cell records (any order; unknown statuses count as failed).
    order
        Method order within a label rate (methods not listed follow, sorted).
    labels
        Display label per method (default: the method name).

    Returns
    -------
    list of dict
        Rows with ``label_rate``, ``method``, ``label``, ``status`` (``ok``, ``failed k/n``
        or ``FAILED``), ``seeds_done``, ``seeds_failed``, ``accuracy``, ``macro_f1``,
        ``best_epoch_accuracy`` and ``wall_s`` (``(mean, std)`` in percent / seconds, or
        ``None``), ``mb_per_client_round`` (mean, federated cells; else ``None``) and ``error`` (the first failure's message, or ``""``).
    """
    labels = labels or {}
    groups: dict[tuple[float, str], list[Mapping[str, Any]]] = {}
    for rec in records:
        groups.setdefault((float(rec["label_rate"]), str(rec["method"])), []).append(rec)
    rank = {m: i for i, m in enumerate(order)}
    rows = []
    for (rate, method), recs in sorted(groups.items(), key=lambda kv: (kv[0][0], rank.get(kv[0][1], len(rank)),
                                                                        kv[0][1])):
        done = sorted((r for r in recs if r.get("status") == DONE), key=lambda r: r["seed"])
        failed = sorted((r for r in recs if r.get("status") != DONE), key=lambda r: r["seed"])
        status = "ok" if not failed else (FAILED_TEXT if not done else f"{FAILED} {len(failed)}/{len(recs)}")
        walls = [float(r["cell_wall_s"]) for r in done if r.get("cell_wall_s") is not None]
        sizes = [float(r["bytes_per_client_round"]) / MB for r in done if r.get("bytes_per_client_round")]
        rows.append({
            "label_rate": rate, "method": method, "label": labels.get(method, method), "status": status,
            "seeds_done": [int(r["seed"]) for r in done], "seeds_failed": [int(r["seed"]) for r in failed],
            "accuracy": _stat(done, "accuracy") if done else None,
            "macro_f1": _stat(done, "macro_f1") if done else None,
            "best_epoch_accuracy": _stat(done, "best_epoch_accuracy") if done else None,
            "wall_s": mean_std(walls) if walls else None,
            "mb_per_client_round": sum(sizes) / len(sizes) if sizes else None,
            "error": str(failed[0].get("error", FAILED_TEXT)) if failed else "",
        })
    return rows


def _pm(stat: tuple[float, float] | None, failed: bool, digits: int = 1) -> str:
    if failed:
        return FAILED_TEXT
    if stat is None:
        return NOT_AVAILABLE
    return f"{stat[0]:.{digits}f} ± {stat[1]:.{digits}f}"


def to_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows as a markdown table (failed groups show ``FAILED`` and their error)."""
    lines = [("| label rate % | method | status | seeds | accuracy % (last epoch) | macro-F1 % (last epoch) "
              "| best-epoch accuracy % (selects on test; paper's metric) | wall s / cell | MB / client / round | error |"),
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        failed = not r["seeds_done"]
        wall = NOT_AVAILABLE if r["wall_s"] is None else f"{r['wall_s'][0]:.0f}"
        error = r["error"].replace("|", "/").replace("\n", " ")[:ERROR_CHARS]
        size = r.get("mb_per_client_round")
        mb = NOT_AVAILABLE if size is None else f"{size:.2f}"
        lines.append(f"| {r['label_rate']:g} | {r['label']} | {r['status']} | {len(r['seeds_done'])} "
                     f"| {_pm(r['accuracy'], failed)} | {_pm(r['macro_f1'], failed)} "
                     f"| {_pm(r['best_epoch_accuracy'], failed)} | {wall} | {mb} | {error} |")
    return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows as CSV (failed groups: empty numbers, status ``FAILED``, the error)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        out: dict[str, Any] = {k: r[k] for k in ("label_rate", "method", "label", "status")}
        out["error"] = r["error"].splitlines()[0] if r["error"] else ""
        out["seeds_done"] = " ".join(map(str, r["seeds_done"]))
        out["seeds_failed"] = " ".join(map(str, r["seeds_failed"]))
        size = r.get("mb_per_client_round")
        out["mb_per_client_round"] = "" if size is None else f"{size:.4f}"
        for key in ("accuracy", "macro_f1", "best_epoch_accuracy", "wall_s"):
            stat = r[key] if r["seeds_done"] else None
            out[f"{key}_mean"], out[f"{key}_std"] = (f"{stat[0]:.4f}", f"{stat[1]:.4f}") if stat else ("", "")
        writer.writerow(out)
    return buf.getvalue()


def write_report(records: Iterable[Mapping[str, Any]], out_dir: Path, order: Sequence[str] = (),
                 labels: Mapping[str, str] | None = None, header: str = "") -> list[dict[str, Any]]:
    """Write ``table.md`` (with ``header`` above it), ``table.csv`` and ``summary.json`` atomically; return the rows."""
    rows = summarise(records, order, labels)
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / TABLE_MD, (header + "\n\n" if header else "") + to_markdown(rows))
    atomic_write_text(out_dir / TABLE_CSV, to_csv(rows))
    atomic_write_text(out_dir / SUMMARY_JSON, json.dumps({"rows": rows}, indent=2))
    return rows
