"""ServerApp: compose the Hydra config, normalisation round, stage 1 with QoMFedAvg, stage 2, write results.json."""

from __future__ import annotations

import itertools
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from fedhar import keys
from fedhar.data.config import DatasetConfig
from fedhar.data.experiment import prepare_experiment
from fedhar.data.loading import load_dataset
from fedhar.data.normalization import Normalizer
from fedhar.data.protocol import resolve_protocol
from fedhar.errors import ConfigError
from fedhar.federated import build_pretrain_model, normalise_prior, probe_accuracy, state_digest
from fedhar.models import ModelConfig
from fedhar.privacy import DPConfig
from fedhar.train import derive_seed, seed_everything
from fedhar.train.checkpoint import atomic_save_state, atomic_write_text
from strategies.federation_grid import FederationGrid
from strategies.norm_round import run_norm_round
from strategies.qom_fedavg import QoMFedAvg, check_stage, influence_bounds
from strategies.run_config import hydra_overrides
from strategies.run_privacy import RunPrivacy
from strategies.stage2 import run_stage2

__all__ = ["app", "check_federation", "check_privacy", "compose_config", "main"]

logger = logging.getLogger(__name__)

RESULTS_MARKER = "fedhar-results: "
#: The merged normalisation statistics in the run folder (``Normalizer.save`` format); the export command reads it.
NORMALIZER_FILE = "normalizer.json"
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
# configs/federated.yaml: the federated defaults (compact model, strategy, federation groups).
CONFIG_NAME = "federated"
_OPTIONAL_GROUPS = ("model", "stage1", "stage2", "quality")

app = ServerApp()


def compose_config(overrides: str) -> DictConfig:
    """Compose configs/federated.yaml with space-separated Hydra ``overrides`` (run-config ``hydra-overrides``)."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(CONFIG_NAME, overrides=overrides.split())


def _group(cfg: DictConfig, name: str) -> dict[str, Any]:
    return OmegaConf.to_container(cfg[name], resolve=True) if name in cfg and cfg[name] is not None else {}  # type: ignore[return-value]


def _setup_record(cfg: DictConfig) -> dict[str, Any]:
    """The static part of every client's config (JSON in the ConfigRecord ``setup``)."""
    dataset = _group(cfg, "dataset")
    dataset.setdefault("cache_dir", str(Path(cfg.paths.cache_dir).expanduser()))
    injections = {k: OmegaConf.to_container(cfg.federation[k], resolve=True) if k in cfg.federation else {}
                  for k in ("inject_failures", "inject_attack")}
    return {"dataset": dataset, "label_rate": float(cfg.label_rate), "seed": int(cfg.seed),
            **{g: _group(cfg, g) for g in _OPTIONAL_GROUPS}, **injections}


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the normalisation round and both stages; write ``<paths.output_dir>/<run_id>/results.json``.

    The server holds the held-out test subjects (and, for a centralised stage 2, the pooled
    labeled rows); it normalises them with the statistics merged from the clients.
    """
    started, started_unix = time.perf_counter(), time.time()
    phases = PhaseTimer()
    cfg = compose_config(" ".join(hydra_overrides(context.run_config)))
    run_dir = Path(cfg.paths.output_dir).expanduser().resolve() / str(context.run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    seed = int(cfg.seed)
    seed_everything(seed)
    setup = _setup_record(cfg)
    dataset_cfg = DatasetConfig.from_mapping(setup["dataset"])
    dataset = load_dataset(dataset_cfg)
    protocol = resolve_protocol(dataset_cfg, dataset.info)
    model_cfg = ModelConfig.from_mapping(setup["model"])
    fed = cfg.federation
    check_federation(fed)
    dp = DPConfig.from_mapping(_group(cfg.privacy, "dp"))
    check_privacy(dp, fed)
    num_nodes = int(fed.min_nodes or len(protocol.train_subjects))
    logger.info("run %s: %d training subjects %s, test subjects %s, output %s", context.run_id,
                len(protocol.train_subjects), list(protocol.train_subjects), list(protocol.test_subjects), run_dir)

    phases.mark("setup")
    wait_for_nodes(grid, num_nodes, float(fed.node_wait_s))
    phases.mark("wait_for_nodes")

    # ---- normalisation round: every client's moments and class counts, merged
    shared: dict[str, Any] = {keys.SETUP: json.dumps(setup), keys.SEED: seed,
                              keys.TRAIN_SUBJECTS: list(protocol.train_subjects)}
    norm = run_norm_round(grid, ConfigRecord(shared), dataset.info, protocol.train_subjects,
                          float(fed.round_timeout_s), min_subjects=int(cfg.privacy.min_merged_subjects))
    normalizer = Normalizer(norm.federation.stats)
    normalizer.save(run_dir / NORMALIZER_FILE)
    # From here on each member node receives the merged statistics and its own label share only.
    grid = FederationGrid(grid, {node: norm.federation.for_subject(subject, dataset_cfg, float(cfg.label_rate),
                                                                   seed).to_config()
                                 for node, subject in norm.node_subjects.items()})
    if len(grid.members) < num_nodes:
        logger.warning("%d of %d nodes were merged in the normalisation round; the stages sample those %d",
                       len(grid.members), num_nodes, len(grid.members))
        num_nodes = len(grid.members)
    experiment = prepare_experiment(dataset, dataset_cfg, float(cfg.label_rate), seed, stats=norm.federation.stats)
    privacy = (RunPrivacy(dp, population=len(protocol.train_subjects),
                          num_sampled=max(1, round(num_nodes * float(fed.fraction_train)))) if dp.enabled else None)
    phases.mark("normalisation_round")

    # ---- stage 1: federated contrastive fusion pretraining
    torch.manual_seed(derive_seed(seed, "init", "stage1"))
    info = experiment.info
    global_model = build_pretrain_model(info, info.modality_names, model_cfg)
    strategy = QoMFedAvg(stage="pretrain", weighting=cfg.strategy.weighting, max_examples=cfg.strategy.max_examples,
                         bounds=influence_bounds(cfg.strategy), min_valid_replies=int(fed.min_valid_replies),
                         known_examples={s: p.num_unlabeled for s, p in experiment.partitions.items()},
                         fraction_train=float(fed.fraction_train), fraction_evaluate=0.0,
                         min_train_nodes=num_nodes, min_available_nodes=num_nodes, privacy=privacy)
    round_times: list[float] = []

    def stage1_eval(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        round_times.append(time.perf_counter())
        global_model.load_state_dict(arrays.to_torch_state_dict())
        if server_round > 0:
            atomic_save_state(global_model.state_dict(), run_dir / f"stage1-round{server_round:03d}.pt")
        if server_round % int(fed.eval_every) and server_round != int(fed.stage1_rounds):
            return None
        acc = probe_accuracy(global_model, experiment.test, seed)
        logger.info("stage 1 round %d: linear probe accuracy on test subjects %.3f", server_round, acc)
        return MetricRecord({"probe-accuracy": acc})

    config = ConfigRecord({**shared, keys.LOCAL_EPOCHS: int(fed.stage1_local_epochs)})
    result1 = strategy.start(grid=grid, initial_arrays=ArrayRecord(global_model.state_dict()),
                             num_rounds=int(fed.stage1_rounds), timeout=float(fed.round_timeout_s),
                             train_config=config, evaluate_fn=stage1_eval)
    check_stage("stage 1", strategy, int(fed.stage1_rounds))
    stage1 = _stage_summary(result1, strategy, round_times, num_nodes)
    stage1["weights_sha256"] = state_digest(result1.arrays.to_torch_state_dict())
    # Under DP the quality scores are not noised: a prior computed from them is not released to clients.
    prior = (_qom_prior(result1.train_metrics_clientapp, info.modality_names) if privacy is None
             else {m: 1.0 / len(info.modality_names) for m in info.modality_names})
    phases.mark("stage1")
    logger.info("global QoM prior for stage 2: %s", prior)

    # ---- stage 2: federated / local / centralised fine-tuning
    stage2 = run_stage2(grid=grid, cfg=cfg, setup=setup, shared=shared, experiment=experiment, model_cfg=model_cfg,
                        encoders=result1.arrays, prior=prior, num_nodes=num_nodes, run_dir=run_dir, privacy=privacy)
    compare = {mode: run_stage2(grid=grid, cfg=cfg, setup=setup, shared=shared, experiment=experiment,
                                model_cfg=model_cfg, encoders=result1.arrays, prior=prior, num_nodes=num_nodes,
                                run_dir=run_dir, mode=mode)
               for mode in fed.get("stage2_compare") or () if mode != fed.stage2_mode}
    phases.mark("stage2")
    results = {
        "run_id": context.run_id, "config": OmegaConf.to_container(cfg, resolve=True),
        "train_subjects": list(experiment.partitions), "test_subjects": list(experiment.protocol.test_subjects),
        "normalization": {**norm.summary(), "file": NORMALIZER_FILE, "min_std": normalizer.min_std,
                          **norm.federation.to_dict()},
        "stage1": stage1, "qom_prior": prior, "stage2": stage2, "final_model": stage2.get("model_file"),
        "stage2_compare": compare,
        "privacy": {"min_merged_subjects": int(cfg.privacy.min_merged_subjects),
                    "dp": privacy.summary() if privacy is not None else None},
        "final": stage2["final"], "wall_time_s": time.perf_counter() - started,
        # Where the server's time went, and when it ran (Unix time): a launcher compares these
        # with its own clock to find the Flower/Ray start-up and tear-down outside main().
        "phases_s": phases.seconds, "server_started_unix": started_unix, "server_finished_unix": time.time(),
    }
    atomic_write_text(run_dir / "results.json", json.dumps(results, indent=2, default=float))
    logger.info("results: %s", run_dir / "results.json")
    # The summary, and the marker line simulations/run_federated.py looks for.
    print(f"fedhar run {context.run_id}: stage 2 {cfg.federation.stage2_mode}, accuracy "
          f"{stage2['final']['accuracy']:.3f}, macro-F1 {stage2['final']['macro_f1']:.3f}, "
          f"{results['wall_time_s']:.0f} s"
          + "".join(f"; stage 2 {m}: accuracy {c['final']['accuracy']:.3f}" for m, c in compare.items())
          + (f"; DP epsilon {privacy.epsilon:.3g} at delta {dp.delta:g}" if privacy is not None else "")
          + f"\n{RESULTS_MARKER}{run_dir / 'results.json'}", flush=True)


_POSITIVE_INTS = ("stage1_rounds", "stage1_local_epochs", "stage2_rounds", "stage2_local_epochs", "eval_every",
                  "min_valid_replies")


def check_privacy(dp: DPConfig, fed: DictConfig) -> None:
    """Reject DP with a stage-2 mode whose releases it does not cover (lda / ccvr statistics, pooled labels).

    Raises
    ------
    ConfigError
        Naming ``federation.stage2_mode`` (or ``stage2_compare``).
    """
    if not dp.enabled:
        return
    modes = [str(fed.stage2_mode), *[str(m) for m in fed.get("stage2_compare") or ()]]
    uncovered = [m for m in modes if m != "federated"]
    if uncovered:
        raise ConfigError(f"privacy.dp covers the QoMFedAvg rounds (stage 1 and stage2_mode=federated); stage-2 "
                          f"mode(s) {uncovered} would release client data it does not noise. Set "
                          "federation.stage2_mode=federated and stage2_compare=[]", "federation.stage2_mode")


def check_federation(fed: DictConfig) -> None:
    """Reject a federation schedule that cannot train: a stage without rounds or epochs, bad fractions.

    Raises
    ------
    ConfigError
        Naming the first bad key.
    """
    for name in _POSITIVE_INTS:
        value = fed.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"federation.{name} must be an integer >= 1, got {value!r} (a stage without rounds or "
                              "epochs would leave its model untrained)", f"federation.{name}")
    if fed.get("min_nodes") is not None and (not isinstance(fed.min_nodes, int) or fed.min_nodes < 1):
        raise ConfigError(f"federation.min_nodes must be null or an integer >= 1, got {fed.min_nodes!r}",
                          "federation.min_nodes")
    if not 0.0 < float(fed.fraction_train) <= 1.0:
        raise ConfigError(f"federation.fraction_train must be in (0, 1], got {fed.fraction_train}",
                          "federation.fraction_train")


class PhaseTimer:
    """Seconds spent in each named phase of the ServerApp, in order (each mark closes one)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def mark(self, phase: str) -> None:
        """Close ``phase``: the time since the previous mark (or the start)."""
        now = time.perf_counter()
        self.seconds[phase] = now - self._last
        self._last = now
        logger.info("phase %s: %.1f s", phase, self.seconds[phase])


def wait_for_nodes(grid: Grid, needed: int, timeout_s: float, poll_s: float = 1.0) -> None:
    """Wait until ``needed`` nodes are connected; fail clearly instead of waiting forever.

    Raises
    ------
    ConfigError
        If fewer nodes than training subjects connect within ``timeout_s`` (e.g. Flower's
        default of 2 simulated SuperNodes for UTD-MHAD's 6 training subjects).
    """
    deadline = time.monotonic() + timeout_s
    while (connected := len(list(grid.get_node_ids()))) < needed:
        if time.monotonic() >= deadline:
            raise ConfigError(
                f"{connected} node(s) connected after {timeout_s:.0f} s, the run needs {needed} (one per training "
                f"subject); simulate them with --federation-config \"num-supernodes={needed} "
                f"client-resources-num-cpus=1\", or set federation.min_nodes", "federation.min_nodes")
        time.sleep(poll_s)


def _stage_summary(result: Any, strategy: QoMFedAvg, times: list[float], num_nodes: int) -> dict[str, Any]:
    """Per-round client metrics, central metrics, wall time per round and bytes per client per round."""
    rounds = len(result.train_metrics_clientapp) or 1
    return {
        "rounds": {int(r): dict(m) for r, m in result.train_metrics_clientapp.items()},
        "central": {int(r): dict(m) for r, m in result.evaluate_metrics_serverapp.items()},
        "round_wall_s": [b - a for a, b in itertools.pairwise(times)],
        "bytes_down_per_client_round": strategy.bytes_sent / max(1, rounds * num_nodes),
        "bytes_up_per_client_round": strategy.bytes_received / max(1, rounds * num_nodes),
        "failed_rounds": {str(r): reason for r, reason in strategy.failed_rounds.items()},
        "excluded_nodes": sorted(strategy.excluded),
        "client_weights": {str(r): w for r, w in strategy.client_weights.items()},
    }


def _qom_prior(rounds: dict[int, MetricRecord], modalities: tuple[str, ...]) -> dict[str, float]:
    """Normalised, example-weighted mean QoM per modality from the last round that reported it."""
    for server_round in sorted(rounds, reverse=True):
        record = rounds[server_round]
        scores = {m: float(record[f"{keys.QOM_PREFIX}{m}"]) for m in modalities  # type: ignore[arg-type]
                  if f"{keys.QOM_PREFIX}{m}" in record}
        if scores:
            return normalise_prior({m: scores.get(m, 0.0) for m in modalities})
    logger.warning("no QoM was reported in stage 1; stage 2 uses a uniform prior")
    return {m: 1.0 / len(modalities) for m in modalities}

