"""Performance benchmarks of fedhar: ``python -m simulations.bench_perf [--only NAME ...] [--out DIR]``.

Five measurements, each printed as a table and written to ``<out>/<name>.json``
(``--only`` picks some; defaults are small, scale them up with the flags):

1. ``overhead``: wall time of federated stage 1 through `flwr run` (N subject clients, E
   local epochs, R rounds; simulations.federated_cell.run_cell) divided by the same R x E
   epochs over the same (pooled) unlabeled data in a plain centralised loop.
2. ``throughput``: samples/s of fedhar's stage-1 loop (fedhar.train.pretrain) vs a bare
   PyTorch loop (same model, loss, batch, optimizer) on the same data.
3. ``communication``: bytes per client per round (down + up, the ArrayRecord of the stage-1
   model) of the reference and compact models, with the accuracies found in existing
   federated results of each variant.
4. ``scale``: peak memory (RSS of the whole process tree) and median round time with
   8, 32, 128, 200 virtual clients on synthetic data with the same total data.
5. ``edge``: single-thread CPU latency per window (batch 1) and file size of the exported
   (TorchScript) fine-tuned classifier of each variant (fedhar.export).

Examples
--------
``python -m simulations.bench_perf --only throughput communication edge``
``python -m simulations.bench_perf --only overhead --rounds 2 --local-epochs 1``
``python -m simulations.bench_perf --only scale --clients 8 32 128 200``
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from fedhar.data.config import DatasetConfig
from fedhar.data.experiment import ExperimentData, prepare_experiment
from fedhar.data.loading import load_dataset
from fedhar.losses.fusion import CosmoFusionLoss, cosmo_objective
from fedhar.models.config import ModelConfig
from fedhar.models.contrastive import ContrastiveFusionModel
from fedhar.models.fusion_classifier import build_fusion_classifier_model
from fedhar.train.batches import iterate_batches, to_tensors
from fedhar.train.checkpoint import atomic_write_text
from fedhar.train.config import PretrainConfig
from fedhar.train.loop import build_optimizer
from fedhar.train.pretrain import pretrain
from simulations import federated_cell
from simulations.centralized import CONFIG_DIR

__all__ = ["MEASUREMENTS", "main"]

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("reference", "compact")
MB = 1e6
MS = 1e3
#: Sampling period of the process-tree memory monitor.
MEMORY_POLL_S = 0.5
_PAGE_KB = 1024


def _compose(overrides: Sequence[str]) -> DictConfig:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides))


def _container(node: Any) -> dict[str, Any]:
    return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]


def _experiment(cfg: DictConfig) -> ExperimentData:
    dataset_cfg = DatasetConfig.from_mapping(_container(cfg.dataset), cache_dir=cfg.paths.get("cache_dir"))
    return prepare_experiment(load_dataset(dataset_cfg), dataset_cfg, float(cfg.label_rate), int(cfg.seed))


def _print_table(title: str, rows: Sequence[dict[str, Any]]) -> None:
    """Print ``rows`` as a markdown table under ``title``."""
    print(f"\n## {title}")
    if not rows:
        print("(no rows)")
        return
    cols = list(dict.fromkeys(k for r in rows for k in r))
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        cells = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in (r.get(c, "") for c in cols)]
        print("| " + " | ".join(cells) + " |")


# ---------------------------------------------------------------- 1. overhead
def centralized_pretrain_seconds(cfg: DictConfig, epochs: int) -> tuple[float, int]:
    """Seconds of ``epochs`` plain centralised stage-1 epochs on the pooled unlabeled data, and its size."""
    experiment = _experiment(cfg)
    model = ContrastiveFusionModel([experiment.info.modality(m) for m in experiment.info.modality_names],
                                   ModelConfig.from_mapping(_container(cfg.model)))
    stage1 = PretrainConfig.from_mapping({**_container(cfg.stage1), "epochs": epochs, "progress": False})
    # The first optimizer of a process imports torch._dynamo (~4 s here): pay it before the timer.
    build_optimizer(model.parameters(), stage1.optim)
    started = time.perf_counter()
    pretrain(model, cosmo_objective(CosmoFusionLoss()), experiment.unlabeled, stage1, int(cfg.seed))
    return time.perf_counter() - started, len(experiment.unlabeled)


def measure_overhead(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Federated stage 1 through `flwr run` vs the same epochs centralised."""
    epochs = args.rounds * args.local_epochs
    cell = federated_cell.Cell(args.label_rate, args.seed, "qom")
    extra = (f"dataset={args.dataset} model={args.model} federation.stage1_rounds={args.rounds} "
             f"federation.stage1_local_epochs={args.local_epochs} federation.centralized_epochs=1 "
             f"federation.stage2_compare=[] federation.eval_every={args.rounds}")
    with tempfile.TemporaryDirectory(prefix="fedhar-overhead-") as tmp:
        started, launched_unix = time.perf_counter(), time.time()
        results = federated_cell.run_cell(cell, Path(tmp), args.budget, args.local_epochs, args.nodes, extra,
                                          args.timeout)
        fed_wall, ended_unix = time.perf_counter() - started, time.time()
    rounds = results["stage1"]["round_wall_s"]
    cfg = _compose([f"dataset={args.dataset}", f"model={args.model}", f"budget={args.budget}",
                    f"label_rate={args.label_rate:g}", f"seed={args.seed}"])
    torch.set_num_threads(args.threads)  # as each simulated client: one CPU (Ray sets one thread per actor)
    central_s, samples = centralized_pretrain_seconds(cfg, epochs)
    fed_stage1 = float(sum(rounds))
    # Where the end-to-end time went: before the ServerApp's main() (flwr run, SuperLink, Ray,
    # the simulation process), its phases, and after it (results, shutdown).
    breakdown = {"before_server_main_s": results["server_started_unix"] - launched_unix,
                 **{f"server_{k}_s": v for k, v in results["phases_s"].items()},
                 "after_server_main_s": ended_unix - results["server_finished_unix"]}
    return [{"clients": args.nodes, "local_epochs": args.local_epochs, "rounds": args.rounds,
             "unlabeled_samples": samples, "centralized_s": central_s, "federated_stage1_rounds_s": fed_stage1,
             "federated_flwr_run_s": fed_wall, "overhead_rounds": fed_stage1 / central_s,
             "overhead_end_to_end": fed_wall / central_s, "centralized_threads": args.threads,
             "federated_parallel_clients": min(args.nodes, os.cpu_count() or 1), **breakdown,
             "note": "rounds_s: sum of stage-1 round times (incl. server probe eval); end_to_end: whole flwr run "
                     "(Ray start, normalisation round, QoM, stage-2 stub, shutdown); clients run in parallel, one "
                     "CPU each"}]


# ---------------------------------------------------------------- 2. throughput
def bare_loop_samples_per_s(model: torch.nn.Module, data: Any, batch_size: int, epochs: int,
                            optim_cfg: Any) -> float:
    """Samples/s of a bare loop: batches, fusion loss, SGD step; nothing else."""
    loss_fn = CosmoFusionLoss()
    optimizer = build_optimizer(model.parameters(), optim_cfg)
    model.train()
    rng = np.random.default_rng(0)
    seen = 0
    started = time.perf_counter()
    for _ in range(epochs):
        for inputs, _ in iterate_batches(data, batch_size, shuffle=True, rng=rng, drop_last=True):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(inputs))
            loss.backward()
            optimizer.step()
            seen += next(iter(inputs.values())).shape[0]
    return seen / (time.perf_counter() - started)


def measure_throughput(args: argparse.Namespace) -> list[dict[str, Any]]:
    """fedhar's stage-1 loop vs a bare PyTorch loop, same model, batch and data."""
    torch.set_num_threads(args.threads)
    rows = []
    for variant in args.variants:
        cfg = _compose([f"dataset={args.dataset}", f"model={variant}", f"label_rate={args.label_rate:g}"])
        experiment = _experiment(cfg)
        specs = [experiment.info.modality(m) for m in experiment.info.modality_names]
        model_cfg = ModelConfig.from_mapping(_container(cfg.model))
        stage1 = PretrainConfig.from_mapping({**_container(cfg.stage1), "epochs": args.epochs, "progress": False})
        unlabeled = to_tensors(experiment.unlabeled)
        # Warm the process up (allocator, kernels) so that neither loop pays it.
        bare_loop_samples_per_s(ContrastiveFusionModel(specs, model_cfg), unlabeled, stage1.batch_size,
                                args.warmup_epochs, stage1.optim)
        steps = args.epochs * (len(experiment.unlabeled) // stage1.batch_size)
        fedhar_runs, bare_runs = [], []
        for _ in range(args.throughput_repeats):  # alternated, so a load change hits both loops alike
            torch.manual_seed(args.seed)
            model = ContrastiveFusionModel(specs, model_cfg)
            started = time.perf_counter()
            pretrain(model, cosmo_objective(CosmoFusionLoss()), experiment.unlabeled, stage1, args.seed)
            fedhar_runs.append(steps * stage1.batch_size / (time.perf_counter() - started))
            torch.manual_seed(args.seed)
            bare_runs.append(bare_loop_samples_per_s(ContrastiveFusionModel(specs, model_cfg), unlabeled,
                                                     stage1.batch_size, args.epochs, stage1.optim))
        fedhar_sps, bare = statistics.median(fedhar_runs), statistics.median(bare_runs)
        rows.append({"model": variant, "batch": stage1.batch_size, "threads": args.threads, "epochs": args.epochs,
                     "repeats": args.throughput_repeats, "fedhar_samples_per_s": fedhar_sps,
                     "bare_samples_per_s": bare, "ratio": fedhar_sps / bare,
                     "ratio_min_max": [min(f / b for f, b in zip(fedhar_runs, bare_runs, strict=True)),
                                       max(f / b for f, b in zip(fedhar_runs, bare_runs, strict=True))]})
    return rows


# ---------------------------------------------------------------- 3. communication
def stage1_payload_bytes(variant: str, dataset: str) -> tuple[int, int]:
    """Bytes of the stage-1 model's ArrayRecord (as sent each round) and its parameter count."""
    from flwr.app import ArrayRecord  # only this measurement needs flwr

    cfg = _compose([f"dataset={dataset}", f"model={variant}"])
    experiment_info = load_dataset(DatasetConfig.from_mapping(_container(cfg.dataset),
                                                              cache_dir=cfg.paths.get("cache_dir"))).info
    model = ContrastiveFusionModel([experiment_info.modality(m) for m in experiment_info.modality_names],
                                   ModelConfig.from_mapping(_container(cfg.model)))
    record = ArrayRecord(model.state_dict())
    return sum(len(a.data) for a in record.values()), sum(p.numel() for p in model.parameters())


def accuracies_by_variant(results_glob: str) -> dict[str, list[float]]:
    """Final accuracies of existing federated results.json files, grouped by model variant."""
    out: dict[str, list[float]] = {}
    for path in sorted(REPO.glob(results_glob)):
        try:
            res = json.loads(path.read_text(encoding="utf-8"))
            variant = res["config"]["model"]["encoder"]["variant"]
            out.setdefault(variant, []).append(float(res["final"]["accuracy"]))
        except (OSError, KeyError, TypeError, json.JSONDecodeError):
            continue
    return out


def measure_communication(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Bytes per client per round of each variant, and the accuracy each reached (existing results)."""
    accs = accuracies_by_variant(args.results_glob)
    rows = []
    for variant in args.variants:
        payload, params = stage1_payload_bytes(variant, args.dataset)
        acc = accs.get(variant, [])
        rows.append({"model": variant, "parameters": params, "MB_down_per_client_round": payload / MB,
                     "MB_up_per_client_round": payload / MB,
                     "federated_accuracy_%": (f"{100 * statistics.fmean(acc):.1f} (n={len(acc)})" if acc
                                              else "no results found")})
    return rows


# ---------------------------------------------------------------- 4. scale
def _tree_rss_kb(root_pid: int) -> int:
    """Resident memory (kB) of ``root_pid`` and all its descendants, from /proc."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            fields = dict(line.split(":", 1) for line in (proc / "status").read_text().splitlines() if ":" in line)
            parents[int(proc.name)] = int(fields["PPid"])
            rss[int(proc.name)] = int(fields.get("VmRSS", "0 kB").split()[0])
        except (OSError, KeyError, ValueError):
            continue
    tree, frontier = {root_pid}, [root_pid]
    while frontier:
        pid = frontier.pop()
        kids = [c for c, p in parents.items() if p == pid and c not in tree]
        tree.update(kids)
        frontier.extend(kids)
    return sum(rss.get(p, 0) for p in tree)


def peak_memory_during(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Run ``fn`` while sampling the RSS of this process tree; return its result and the peak in MB."""
    peak = [0]
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _tree_rss_kb(os.getpid()))
            stop.wait(MEMORY_POLL_S)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        result = fn()
    finally:
        stop.set()
        thread.join()
    return result, peak[0] * _PAGE_KB / MB


def measure_scale(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Peak memory and round time vs number of virtual clients, same total synthetic data."""
    classes = args.synthetic_classes
    rows = []
    for clients in args.clients:
        subjects = clients + 1  # the last subject is the held-out test subject
        per_class = max(1, math.ceil(args.total_samples / (subjects * classes)))
        extra = (f"dataset=synthetic dataset.preprocess.num_subjects={subjects} "
                 f"dataset.preprocess.num_classes={classes} dataset.preprocess.samples_per_subject_class={per_class} "
                 f"dataset.protocols.default.test_subjects=[{subjects}] label_rate=50 model={args.model} "
                 f"federation.stage1_rounds={args.rounds} federation.stage1_local_epochs=1 "
                 f"federation.centralized_epochs=1 federation.stage2_compare=[] federation.eval_every={args.rounds} "
                 f"federation.node_wait_s={args.timeout}")
        cell = federated_cell.Cell(50.0, args.seed, "qom")
        with tempfile.TemporaryDirectory(prefix="fedhar-scale-") as tmp:
            started = time.perf_counter()
            results, peak_mb = peak_memory_during(functools.partial(
                federated_cell.run_cell, cell, Path(tmp), args.budget, 1, clients, extra, args.timeout))
            wall = time.perf_counter() - started
        rounds = results["stage1"]["round_wall_s"]
        rows.append({"clients": clients, "samples_total": subjects * classes * per_class, "rounds": args.rounds,
                     "median_round_s": statistics.median(rounds[1:] or rounds), "peak_rss_MB": peak_mb,
                     "flwr_run_s": wall})
    return rows


# ---------------------------------------------------------------- 5. edge
def measure_edge(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Single-thread latency per window and file size of the exported fine-tuned classifier of each variant."""
    from fedhar.export import ExportMetadata, export_torchscript

    torch.set_num_threads(1)
    rows = []
    for variant in args.variants:
        cfg = _compose([f"dataset={args.dataset}", f"model={variant}"])
        info = load_dataset(DatasetConfig.from_mapping(_container(cfg.dataset),
                                                       cache_dir=cfg.paths.get("cache_dir"))).info
        specs = [info.modality(m) for m in info.modality_names]
        model = build_fusion_classifier_model(specs, info.num_classes, ModelConfig.from_mapping(_container(cfg.model)))
        checkpoint = dict(c.split("=", 1) for c in args.checkpoint).get(variant)
        if checkpoint:
            state = torch.load(checkpoint, map_location="cpu", weights_only=False)
            model.load_state_dict(state.get("model", state) if isinstance(state, dict) else state)
        meta = ExportMetadata(tuple(info.modality_names), tuple(tuple(s.shape) for s in specs))
        with tempfile.TemporaryDirectory(prefix="fedhar-edge-") as tmp:
            path = export_torchscript(model.eval(), meta, Path(tmp) / f"{variant}.ts")
            size = path.stat().st_size
            runner = torch.jit.load(str(path))
        inputs = tuple(torch.randn(1, *s.shape) for s in specs)
        with torch.inference_mode():
            for _ in range(args.warmup):
                runner(*inputs)
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                runner(*inputs)
                times.append(time.perf_counter() - t0)
        rows.append({"model": variant, "weights": "checkpoint" if checkpoint else "random init (same graph)",
                     "file_MB": size / MB, "latency_ms_median": MS * statistics.median(times),
                     "latency_ms_p90": MS * statistics.quantiles(times, n=10)[-1], "threads": 1})
    return rows


MEASUREMENTS: dict[str, Callable[[argparse.Namespace], list[dict[str, Any]]]] = {
    "overhead": measure_overhead, "throughput": measure_throughput, "communication": measure_communication,
    "scale": measure_scale, "edge": measure_edge,
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line flags (small defaults; every measurement selectable with --only)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", choices=list(MEASUREMENTS), default=list(MEASUREMENTS))
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "perf")
    p.add_argument("--dataset", default="utd-mhad")
    p.add_argument("--model", default="compact", help="model of overhead / scale runs")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS))
    p.add_argument("--budget", default="tiny", help="configs/budget/<name>.yaml of the federated runs")
    p.add_argument("--label-rate", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nodes", type=int, default=6, help="overhead: clients (UTD: 6 training subjects)")
    p.add_argument("--rounds", type=int, default=2, help="overhead / scale: stage-1 rounds")
    p.add_argument("--local-epochs", type=int, default=1, help="overhead: local epochs per round")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per flwr run")
    p.add_argument("--epochs", type=int, default=1, help="throughput: epochs per loop")
    p.add_argument("--threads", type=int, default=1, help="throughput and overhead's centralised loop: torch threads")
    p.add_argument("--warmup-epochs", type=int, default=1, help="throughput: untimed bare-loop epochs first")
    p.add_argument("--throughput-repeats", type=int, default=3,
                   help="throughput: alternated (fedhar, bare) pairs; medians are reported")
    p.add_argument("--results-glob", default="benchmarks/federated/runs/**/results.json",
                   help="communication: existing federated results to read accuracies from")
    p.add_argument("--clients", type=int, nargs="+", default=[8, 32], help="scale: virtual clients (8 32 128 200)")
    p.add_argument("--total-samples", type=int, default=1200, help="scale: synthetic samples in all")
    p.add_argument("--synthetic-classes", type=int, default=5)
    p.add_argument("--checkpoint", nargs="*", default=[], help="edge: variant=path of fine-tuned weights")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeats", type=int, default=200)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected measurements; print each as a table and write ``<out>/<name>.json``."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.only:
        logger.info("measuring %s", name)
        load_before = os.getloadavg()
        started = time.perf_counter()
        rows = MEASUREMENTS[name](args)
        payload = {"measurement": name, "rows": rows, "seconds": time.perf_counter() - started,
                   # the machine may be shared: its 1/5/15-min load averages before and after
                   "load_average": {"before": load_before, "after": os.getloadavg()}, "cpus": os.cpu_count(),
                   "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
        atomic_write_text(args.out / f"{name}.json", json.dumps(payload, indent=2))
        _print_table(name, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
