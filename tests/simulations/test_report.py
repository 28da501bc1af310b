"""Tables of a comparison from hand-made cell records: statistics, failed cells, CSV."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from simulations.report import FAILED_TEXT, summarise, to_csv, to_markdown, write_report


def _rec(method: str, seed: int, acc: float | None = None, f1: float | None = None, best: float | None = None,
         rate: float = 5.0, status: str = "done", error: str = "") -> dict:
    rec = {"method": method, "label_rate": rate, "seed": seed, "status": status, "cell_wall_s": 10.0 + seed}
    if status == "done":
        rec.update(accuracy=acc, macro_f1=f1, best_epoch_accuracy=best)
    else:
        rec["error"] = error
    return rec


def test_summarise__mean_and_sample_std_over_seeds() -> None:
    # Prepare: two seeds, accuracy 0.50 and 0.60 -> mean 55.0 %, sample std 7.07 %
    records = [_rec("cosmo", 0, 0.5, 0.4, 0.6), _rec("cosmo", 1, 0.6, 0.5, 0.7)]
    # Execute
    (row,) = summarise(records)
    # Assert
    assert row["status"] == "ok" and row["seeds_done"] == [0, 1]
    assert row["accuracy"] == pytest.approx((55.0, 7.0710678))
    assert row["macro_f1"] == pytest.approx((45.0, 7.0710678))
    assert row["best_epoch_accuracy"] == pytest.approx((65.0, 7.0710678))


def test_summarise__order_by_rate_then_given_method_order() -> None:
    records = [_rec("b", 0, 0.1, 0.1, rate=10), _rec("a", 0, 0.1, 0.1, rate=10), _rec("b", 0, 0.1, 0.1, rate=5)]
    rows = summarise(records, order=["b", "a"], labels={"a": "method A"})
    assert [(r["label_rate"], r["method"]) for r in rows] == [(5, "b"), (10, "b"), (10, "a")]
    assert rows[2]["label"] == "method A"


def test_markdown__failed_group_shows_failed_not_numbers() -> None:
    records = [_rec("fed-qom", 0, status="failed", error="RuntimeError: flwr run failed (exit 1)"),
               _rec("cosmo", 0, 0.5, 0.4, 0.6)]
    text = to_markdown(summarise(records, order=["cosmo", "fed-qom"]))
    failed_line = next(line for line in text.splitlines() if "fed-qom" in line)
    assert failed_line.count(FAILED_TEXT) >= 3
    assert "RuntimeError: flwr run failed" in failed_line
    assert not any(ch.isdigit() for ch in failed_line.split("|")[5])  # accuracy column: no number
    assert "50.0 ± 0.0" in text


def test_markdown__partly_failed_group_counts_failures_and_uses_finished_seeds() -> None:
    records = [_rec("cosmo", 0, 0.5, 0.4), _rec("cosmo", 1, status="failed", error="ValueError: x")]
    (row,) = summarise(records)
    assert row["status"] == "failed 1/2" and row["seeds_failed"] == [1]
    assert row["accuracy"] == pytest.approx((50.0, 0.0))
    assert row["best_epoch_accuracy"] is None  # missing for a (federated) cell: n/a, not 0
    assert "n/a" in to_markdown([row])


def test_csv__failed_group_has_empty_numbers_and_the_error() -> None:
    records = [_rec("fed-qom", 0, status="failed", error="RuntimeError: boom\ntraceback..."),
               _rec("cosmo", 0, 0.5, 0.25, 0.6)]
    rows = list(csv.DictReader(io.StringIO(to_csv(summarise(records, order=["cosmo"])))))
    by_method = {r["method"]: r for r in rows}
    assert by_method["fed-qom"]["status"] == FAILED_TEXT
    assert by_method["fed-qom"]["accuracy_mean"] == "" and by_method["fed-qom"]["error"] == "RuntimeError: boom"
    assert float(by_method["cosmo"]["accuracy_mean"]) == pytest.approx(50.0)
    assert float(by_method["cosmo"]["macro_f1_mean"]) == pytest.approx(25.0)


def test_write_report__writes_three_files(tmp_path: Path) -> None:
    write_report([_rec("cosmo", 0, 0.5, 0.4)], tmp_path, header="Header line")
    assert (tmp_path / "table.md").read_text().startswith("Header line")
    assert (tmp_path / "table.csv").is_file() and (tmp_path / "summary.json").is_file()
