"""What a finished federated run tells its user: a few closing lines and a per-round convergence plot.

Both are read from the run's ``results.json`` by the launcher (``simulations.run_federated``),
so the ServerApp stays free of plotting and of the repository's committed benchmarks. The
centralised reference is the committed benchmark of the default recipe at the run's dataset
and label rate (named as such, with its budget), never a number computed for this run.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from fedhar.train.checkpoint import atomic_write_bytes, atomic_write_text
from simulations.grid import mean_std

__all__ = [
    "CENTRALIZED_REFERENCES",
    "PLOT_FILE",
    "centralized_reference",
    "closing_summary",
    "plot_convergence",
    "summarise_runs",
    "summary_table",
]

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
PLOT_FILE = "convergence.png"
PERCENT = 100.0
#: (dataset, protocol) -> the committed centralised benchmark of the default recipe (BENCHMARKS.md §2.1), its budget.
CENTRALIZED_REFERENCES = {
    ("utd-mhad", "cosmo"): ("benchmarks/learning/utd/summary.json", "budget=cpu-utd"),
    ("usc-had", "default"): ("benchmarks/learning/usc/summary.json", "budget=cpu-usc"),
}


def centralized_reference(dataset: str, label_rate: float, method: str = "cosmo", repo: Path = REPO,
                          protocol: str = "cosmo") -> str:
    """One line: the committed centralised ``method`` result at ``dataset`` / ``label_rate``, or why there is none."""
    if (dataset, protocol) not in CENTRALIZED_REFERENCES:
        return f"no committed centralised reference for dataset {dataset!r}, protocol {protocol!r}"
    rel, budget = CENTRALIZED_REFERENCES[(dataset, protocol)]
    path = repo / rel
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))["rows"]
    except (OSError, KeyError, json.JSONDecodeError) as err:
        return f"centralised reference unavailable ({rel}: {err})"
    row = next((r for r in rows if r.get("method") == method and float(r.get("label_rate", -1)) == float(label_rate)),
               None)
    if row is None:
        return f"no committed centralised {method} result at {label_rate:g} % labels in {rel}"
    mean, std = row["accuracy"]
    seeds = row.get("seeds", row.get("seeds_done", []))  # the sweep's report (simulations/report.py) or older summaries
    return (f"centralised {method} reference: {mean:.1f} ± {std:.1f} % accuracy over {len(seeds)} seeds "
            f"(committed benchmark {rel}, {budget}, not this run)")


def _mb(value: float) -> str:
    return f"{value / 1e6:.2f} MB"


def closing_summary(results: Mapping[str, Any], results_path: Path, plot_path: Path | None,
                    repo: Path = REPO) -> str:
    """The few lines printed after a run: accuracy, the reference, rounds, bytes, where the files are."""
    cfg = results["config"]
    stage2 = results["stage2"]
    final = results["final"]
    protocol = str(cfg["dataset"].get("protocol", "cosmo"))
    census = results.get("normalization", {}).get("class_counts", {})
    num_classes = len(next(iter(census.values()))) if census else 0
    chance = f" (chance {PERCENT / num_classes:.1f} %)" if num_classes else ""
    stage1 = results["stage1"]
    rounds1 = len(stage1.get("rounds", {}))
    fed = cfg["federation"]
    bytes1 = stage1["bytes_down_per_client_round"] + stage1["bytes_up_per_client_round"]
    if "class_stats" in stage2:
        how2 = (f"one class-statistics round ({stage2['class_stats']['num_merged']} clients merged, "
                f"{stage2['class_stats']['num_rejected']} rejected)")
        bytes2 = stage2["bytes_down_per_client_round"] + stage2["bytes_up_per_client_round"]
    elif "rounds" in stage2:
        how2 = f"{len(stage2['rounds'])} rounds x {fed['stage2_local_epochs']} local epochs"
        bytes2 = (stage2["bytes_down_per_client_round"] + stage2["bytes_up_per_client_round"]) * len(stage2["rounds"])
    else:
        how2, bytes2 = f"{stage2.get('epochs', '?')} epochs", 0.0
    lines = [
        (f"fedhar run {results['run_id']} on {cfg['dataset']['name']}, {cfg['label_rate']:g} % labels, seed "
        f"{cfg['seed']}: stage 2 {stage2['mode']}: accuracy {PERCENT * final['accuracy']:.1f} %, macro-F1 "
        f"{PERCENT * final['macro_f1']:.1f} % on held-out subjects {results['test_subjects']}{chance}"),
        f"  {centralized_reference(cfg['dataset']['name'], float(cfg['label_rate']), repo=repo, protocol=protocol)}",
        (f"  stage 1: {rounds1} rounds x {fed['stage1_local_epochs']} local epochs, {_mb(bytes1)} per client per round "
        f"(down + up); stage 2: {how2}, {_mb(bytes2)} per client; {results['wall_time_s']:.0f} s in the server"),
        f"  results: {results_path}" + (f"; plot: {plot_path}" if plot_path is not None else ""),
    ]
    dp = (results.get("privacy") or {}).get("dp")
    if dp:
        lines.insert(1, f"  differential privacy: epsilon {dp['epsilon']:.3g} at delta {dp['delta']:g} over "
                        f"{dp['num_releases']} noised aggregations (noise multiplier {dp['noise_multiplier']:g}, clip "
                        f"{dp['clip_norm']:g}, noise std {dp['noise_std']:.3g}; client-level, add or remove one subject)")
    personal = stage2.get("personalised")
    if personal and "own_accuracy_personal" in personal.get("mean", {}):
        mean = personal["mean"]
        lines.insert(1, f"  personalised heads, mean over {len(personal['clients'])} clients: own held-out rows "
                        f"{PERCENT * mean['own_accuracy_global']:.1f} % (global head) -> "
                        f"{PERCENT * mean['own_accuracy_personal']:.1f} % (personal); held-out subjects "
                        f"{PERCENT * mean['test_accuracy_global']:.1f} % -> {PERCENT * mean['test_accuracy_personal']:.1f} %")
    for mode, other in results.get("stage2_compare", {}).items():
        lines.insert(1, f"  stage 2 {mode} from the same encoders: accuracy {PERCENT * other['final']['accuracy']:.1f} %, "
                        f"macro-F1 {PERCENT * other['final']['macro_f1']:.1f} %")
    return "\n".join(lines)


def _series(rounds: Mapping[str, Mapping[str, float]], key: str) -> tuple[list[int], list[float]]:
    pairs = sorted((int(r), float(m[key])) for r, m in rounds.items() if key in m)
    return [r for r, _ in pairs], [v for _, v in pairs]


def plot_convergence(results: Mapping[str, Any], out: Path) -> Path:
    """Per-round stage-1 training loss and linear-probe accuracy, and per-round stage-2 accuracy, as one PNG."""
    stage1, stage2 = results["stage1"], results["stage2"]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    rounds, loss = _series(stage1.get("rounds", {}), "train-loss")
    ax_loss.plot(rounds, loss, marker="o")
    ax_loss.set(xlabel="stage-1 round", ylabel="mean client contrastive loss", title="Stage 1: training loss")
    rounds, probe = _series(stage1.get("central", {}), "probe-accuracy")
    ax_acc.plot(rounds, [PERCENT * p for p in probe], marker="o", label="stage 1: linear probe, CV on the test subjects' labels")
    if "central" in stage2:  # FedAvg stage 2: central evaluation per round, after stage 1's rounds
        offset = max(rounds, default=0)
        r2, acc2 = _series(stage2["central"], "accuracy")
        ax_acc.plot([offset + r for r in r2], [PERCENT * a for a in acc2], marker="s", label="stage 2: FedAvg")
    else:
        ax_acc.axhline(PERCENT * results["final"]["accuracy"], color="C2", linestyle="--",
                       label=f"stage 2 {stage2['mode']}: final")
    ax_acc.set(xlabel="round", ylabel="accuracy on held-out subjects %", title="Accuracy", ylim=(0, 100))
    ax_acc.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"run {results['run_id']}: {results['config']['dataset']['name']}, "
                 f"{results['config']['label_rate']:g} % labels, seed {results['config']['seed']}", fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return atomic_write_bytes(out, buffer.getvalue())


def summarise_runs(paths: list[Path]) -> dict[str, Any]:
    """Mean ± std over seeds of finished runs' final accuracy and macro-F1, per dataset, label rate and stage-2 mode."""
    groups: dict[tuple[str, float, str], list[dict[str, Any]]] = {}
    for path in paths:
        results = json.loads(path.read_text(encoding="utf-8"))
        cfg = results["config"]
        key = (cfg["dataset"]["name"], float(cfg["label_rate"]), results["stage2"]["mode"])
        groups.setdefault(key, []).append(results)
    rows = []
    for (dataset, rate, mode), runs in sorted(groups.items()):
        acc = [PERCENT * r["final"]["accuracy"] for r in runs]
        f1 = [PERCENT * r["final"]["macro_f1"] for r in runs]
        walls = [r["wall_time_s"] for r in runs]
        rows.append({"dataset": dataset, "label_rate": rate, "stage2_mode": mode,
                     "seeds": [r["config"]["seed"] for r in runs], "accuracy": _mean_std(acc),
                     "macro_f1": _mean_std(f1), "per_seed_accuracy": acc, "server_wall_s": _mean_std(walls),
                     "stage1_rounds": sorted({len(r["stage1"]["rounds"]) for r in runs})})
    return {"rows": rows}


def _mean_std(values: list[float]) -> list[float]:
    return list(mean_std(values))


def summary_table(summary: dict[str, Any]) -> str:
    """Markdown table of :func:`summarise_runs`."""
    lines = ["| dataset | label rate % | stage 2 | seeds | accuracy % | macro-F1 % | per seed | server s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in summary["rows"]:
        lines.append(f"| {r['dataset']} | {r['label_rate']:g} | {r['stage2_mode']} | {len(r['seeds'])} | "
                     f"{r['accuracy'][0]:.1f} ± {r['accuracy'][1]:.1f} | {r['macro_f1'][0]:.1f} ± {r['macro_f1'][1]:.1f} | "
                     f"{', '.join(f'{a:.1f}' for a in r['per_seed_accuracy'])} | {r['server_wall_s'][0]:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m simulations.run_summary --out DIR RESULTS.json ...``: summary.json and table.md of finished runs."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("results", type=Path, nargs="+", help="results.json files of finished runs")
    parser.add_argument("--out", type=Path, required=True, help="folder for summary.json and table.md")
    args = parser.parse_args(argv)
    missing = [p for p in args.results if not p.is_file()]
    if missing:
        parser.error(f"no such results file: {missing[0]}")
    summary = summarise_runs(args.results)
    atomic_write_text(args.out / "summary.json", json.dumps(summary, indent=2))
    atomic_write_text(args.out / "table.md", summary_table(summary))
    print(summary_table(summary), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
