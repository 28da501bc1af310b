"""ServerApp: compose the Hydra config, normalisation round, stage 1 with QoMFedAvg, stage 2, write results.json."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from omegaconf import DictConfig, OmegaConf

from fedhar import keys
from fedhar.config import ExperimentConfig
from fedhar.data.experiment import ExperimentData, prepare_experiment
from fedhar.data.loading import load_dataset
from fedhar.data.normalization import Normalizer
from fedhar.data.protocol import resolve_protocol
from fedhar.errors import ConfigError
from fedhar.federated import build_pretrain_model, normalise_prior, probe_accuracy, state_digest
from fedhar.models import ModelConfig
from fedhar.privacy import DPConfig
from fedhar.secure_sum import SecureAggregationConfig
from fedhar.train import derive_seed, seed_everything
from fedhar.train.checkpoint import atomic_save_state, atomic_write_text
from strategies.federation_grid import FederationGrid
from strategies.norm_round import run_norm_round
from strategies.qom_fedavg import QoMFedAvg, check_stage, influence_bounds
from strategies.run_config import compose_config, hydra_overrides, run_folder
from strategies.run_privacy import RunPrivacy
from strategies.run_state import Stage1Progress, finish_run, load_run, stage1_checkpoint, start_run
from strategies.secure_aggregation import SecureAggregation
from strategies.stage2 import run_stage2

__all__ = ["app", "check_federation", "check_privacy", "main"]

logger = logging.getLogger(__name__)

#: The merged normalisation statistics in the run folder (``Normalizer.save`` format); the export command reads it.
NORMALIZER_FILE = "normalizer.json"
_OPTIONAL_GROUPS = ("model", "stage1", "stage2", "quality", "method")

app = ServerApp()


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
    overrides = hydra_overrides(context.run_config)
    cfg = compose_config(" ".join(overrides))
    run_dir = run_folder(Path(cfg.paths.output_dir).expanduser().resolve(), context.run_config, context.run_id)
    resume = str(context.run_config.get(keys.RESUME, "") or "")
    if resume:
        run_dir, record = load_run(run_dir.parent, resume)
        if overrides and overrides != record["overrides"]:
            logger.warning("resuming run %s with its own config %s; this run's %s are ignored", resume,
                           record["overrides"], overrides)
        cfg = compose_config(" ".join(record["overrides"]))
        start_run(run_dir, context.run_id, record["overrides"], resumed_from=record)
        progress = Stage1Progress.load(run_dir)
        logger.info("resuming run %s in %s after stage-1 round %d", resume, run_dir, progress.last_round)
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        start_run(run_dir, context.run_id, overrides)
        progress = Stage1Progress()
    setup = _setup_record(cfg)
    # The same typed config every client builds from ``setup``: a bad group fails here, before any round.
    exp = ExperimentConfig.from_mapping(setup, progress=False)
    seed, dataset_cfg, model_cfg = exp.seed, exp.dataset, exp.model
    seed_everything(seed)
    dataset = load_dataset(dataset_cfg)
    protocol = resolve_protocol(dataset_cfg, dataset.info)
    fed = cfg.federation
    check_federation(fed)
    dp = DPConfig.from_mapping(_group(cfg.privacy, "dp"))
    secure_cfg = SecureAggregationConfig.from_mapping(_group(cfg.privacy, "secure_aggregation"))
    check_privacy(dp, secure_cfg, fed)
    # Secure aggregation sums the normalisation moments in a fixed-point range: every modality needs its bounds.
    bounds = dataset_cfg.bounds_of(dataset.info.modalities) if secure_cfg.enabled else None
    num_nodes = int(fed.min_nodes or len(protocol.train_subjects))
    logger.info("run %s: %d training subjects %s, test subjects %s, output %s", context.run_id,
                len(protocol.train_subjects), list(protocol.train_subjects), list(protocol.test_subjects), run_dir)

    phases.mark("setup")
    wait_for_nodes(grid, num_nodes, float(fed.node_wait_s))
    phases.mark("wait_for_nodes")

    # ---- normalisation round: every client's moments and class counts, merged (the moments as a secure sum
    # under secure aggregation)
    shared: dict[str, Any] = {keys.SETUP: json.dumps(setup), keys.SEED: seed,
                              keys.TRAIN_SUBJECTS: list(protocol.train_subjects)}
    secure = (SecureAggregation(secure_cfg, {}, float(secure_cfg.timeout_s or fed.round_timeout_s), seed)
              if secure_cfg.enabled else None)
    norm = run_norm_round(grid, ConfigRecord(shared), dataset.info, protocol.train_subjects,
                          float(fed.round_timeout_s), min_subjects=int(cfg.privacy.min_merged_subjects),
                          secure=secure, bounds=bounds)
    normalizer = Normalizer(norm.federation.stats)
    normalizer.save(run_dir / NORMALIZER_FILE)
    # From here on each member node receives the merged statistics and its own label share only.
    grid = FederationGrid(grid, {node: norm.federation.for_subject(subject, dataset_cfg, exp.label_rate,
                                                                   seed).to_config()
                                 for node, subject in norm.node_subjects.items()})
    if len(grid.members) < num_nodes:
        logger.warning("%d of %d nodes were merged in the normalisation round; the stages sample those %d",
                       len(grid.members), num_nodes, len(grid.members))
        num_nodes = len(grid.members)
    experiment = prepare_experiment(dataset, dataset_cfg, exp.label_rate, seed, stats=norm.federation.stats)
    planned = int(fed.stage1_rounds) + (int(fed.stage2_rounds) if str(fed.stage2_mode) == "federated" else 0)
    privacy = (RunPrivacy(dp, population=len(protocol.train_subjects),
                          num_sampled=max(1, round(num_nodes * float(fed.fraction_train))), planned_releases=planned)
               if dp.enabled else None)
    secure = replace(secure, node_subjects=dict(norm.node_subjects)) if secure is not None else None
    phases.mark("normalisation_round")

    # ---- stage 1: federated contrastive fusion pretraining (from the last complete round when resuming)
    if privacy is not None:
        privacy.restore(progress.dp_releases)
    stage1_arrays, stage1 = _run_stage1(grid, cfg, experiment, model_cfg, shared, num_nodes, run_dir, privacy,
                                        progress, secure)
    # Under DP the quality scores are not noised: a prior computed from them is not released to clients.
    info = experiment.info
    prior = (_qom_prior({int(r): m for r, m in progress.rounds.items()}, info.modality_names) if privacy is None
             else {m: 1.0 / len(info.modality_names) for m in info.modality_names})
    phases.mark("stage1")
    logger.info("global QoM prior for stage 2: %s", prior)

    # ---- stage 2: federated / local / centralised fine-tuning
    stage2 = run_stage2(grid=grid, cfg=cfg, exp=exp, shared=shared, experiment=experiment,
                        encoders=stage1_arrays, prior=prior, num_nodes=num_nodes, run_dir=run_dir, privacy=privacy,
                        secure=secure)
    compare = {mode: run_stage2(grid=grid, cfg=cfg, exp=exp, shared=shared, experiment=experiment,
                                encoders=stage1_arrays, prior=prior, num_nodes=num_nodes, run_dir=run_dir, mode=mode,
                                privacy=privacy, secure=secure)
               for mode in fed.get("stage2_compare") or () if mode != fed.stage2_mode}
    phases.mark("stage2")
    results = {
        "run_id": int(resume) if resume else context.run_id, "flower_run_id": context.run_id, "config": OmegaConf.to_container(cfg, resolve=True),
        "train_subjects": list(experiment.partitions), "test_subjects": list(experiment.protocol.test_subjects),
        "normalization": {**norm.summary(), "file": NORMALIZER_FILE, "min_std": normalizer.min_std,
                          **norm.federation.to_dict()},
        "stage1": stage1, "qom_prior": prior, "stage2": stage2, "final_model": stage2.get("model_file"),
        "stage2_compare": compare,
        "privacy": {"min_merged_subjects": int(cfg.privacy.min_merged_subjects),
                    "dp": privacy.summary() if privacy is not None else None,
                    "secure_aggregation": asdict(secure_cfg) if secure is not None else None},
        "final": stage2["final"], "wall_time_s": time.perf_counter() - started,
        # Where the server's time went, and when it ran (Unix time): a launcher compares these
        # with its own clock to find the Flower/Ray start-up and tear-down outside main().
        "phases_s": phases.seconds, "server_started_unix": started_unix, "server_finished_unix": time.time(),
    }
    atomic_write_text(run_dir / "results.json", json.dumps(results, indent=2, default=float))
    finish_run(run_dir)
    logger.info("results: %s", run_dir / "results.json")
    # The summary; simulations/run_federated.py finds results.json from the run id (strategies.run_config.run_folder).
    print(f"fedhar run {context.run_id}: stage 2 {cfg.federation.stage2_mode}, accuracy "
          f"{stage2['final']['accuracy']:.3f}, macro-F1 {stage2['final']['macro_f1']:.3f}, "
          f"{results['wall_time_s']:.0f} s"
          + "".join(f"; stage 2 {m}: accuracy {c['final']['accuracy']:.3f}" for m, c in compare.items())
          + (f"; DP epsilon {privacy.epsilon:.3g} at delta {dp.delta:g}" if privacy is not None else "")
          + ("; secure aggregation: the server saw sums only" if secure is not None else ""),
          flush=True)


_POSITIVE_INTS = ("stage1_rounds", "stage1_local_epochs", "stage2_rounds", "stage2_local_epochs", "eval_every",
                  "min_valid_replies")


def _run_stage1(grid: Grid, cfg: DictConfig, experiment: ExperimentData, model_cfg: ModelConfig,
                shared: dict[str, Any], num_nodes: int, run_dir: Path, privacy: RunPrivacy | None,
                progress: Stage1Progress, secure: SecureAggregation | None = None) -> tuple[ArrayRecord, dict[str, Any]]:
    """Stage 1's rounds left after ``progress``; each round checkpointed and recorded in ``progress``.

    Returns the final global arrays and the stage's summary for results.json.
    """
    fed, seed, info = cfg.federation, int(cfg.seed), experiment.info
    torch.manual_seed(derive_seed(seed, "init", "stage1"))
    global_model = build_pretrain_model(info, info.modality_names, model_cfg)
    saved = progress.weights(run_dir)
    if saved is not None:
        global_model.load_state_dict(saved)
    done, total = progress.last_round, int(fed.stage1_rounds)
    strategy = QoMFedAvg(stage="pretrain", weighting=cfg.strategy.weighting, max_examples=cfg.strategy.max_examples,
                         bounds=influence_bounds(cfg.strategy), min_valid_replies=int(fed.min_valid_replies),
                         known_examples={s: p.num_unlabeled for s, p in experiment.partitions.items()},
                         fraction_train=float(fed.fraction_train), fraction_evaluate=0.0,
                         min_train_nodes=num_nodes, min_available_nodes=num_nodes, privacy=privacy,
                         round_offset=done, secure=secure)
    last_time = [time.perf_counter()]
    crash_after = fed.get("inject_server_crash_after_round")

    def stage1_eval(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        server_round += done
        now = time.perf_counter()
        global_model.load_state_dict(arrays.to_torch_state_dict())
        if server_round > done:  # a round of this start: checkpoint, then record it
            atomic_save_state(global_model.state_dict(), stage1_checkpoint(run_dir, server_round))
            progress.round_wall_s.append(now - last_time[0])
            progress.rounds[str(server_round)] = strategy.round_metrics.get(server_round, {})
            progress.failed_rounds = {**progress.failed_rounds,
                                      **{str(r): why for r, why in strategy.failed_rounds.items()}}
            progress.client_weights = {**progress.client_weights,
                                       **{str(r): w for r, w in strategy.client_weights.items()}}
            progress.dp_releases = privacy.releases if privacy is not None else []
            progress.last_round = server_round
        last_time[0] = now
        if server_round % int(fed.eval_every) and server_round != total and server_round != crash_after:
            progress.save(run_dir)
            return None
        acc = probe_accuracy(global_model, experiment.test, seed)
        logger.info("stage 1 round %d: linear probe accuracy on test subjects %.3f", server_round, acc)
        progress.central[str(server_round)] = {"probe-accuracy": acc}
        progress.save(run_dir)
        if crash_after is not None and server_round == int(crash_after) and server_round > done:
            raise RuntimeError(f"injected server crash after stage-1 round {server_round} "
                               "(federation.inject_server_crash_after_round)")
        return MetricRecord({"probe-accuracy": acc})

    if done < total:
        config = ConfigRecord({**shared, keys.LOCAL_EPOCHS: int(fed.stage1_local_epochs)})
        strategy.start(grid=grid, initial_arrays=ArrayRecord(global_model.state_dict()), num_rounds=total - done,
                       timeout=float(fed.round_timeout_s), train_config=config, evaluate_fn=stage1_eval)
    check_stage("stage 1", strategy, total - done)
    rounds_here = max(1, total - done)
    summary = {
        "rounds": progress.rounds, "central": progress.central, "round_wall_s": progress.round_wall_s,
        "bytes_down_per_client_round": strategy.bytes_sent / (rounds_here * num_nodes),
        "bytes_up_per_client_round": strategy.bytes_received / (rounds_here * num_nodes),
        "failed_rounds": progress.failed_rounds, "excluded_nodes": sorted(strategy.excluded),
        "client_weights": progress.client_weights, "resumed_after_round": done or None,
        "weights_sha256": state_digest(global_model.state_dict()),
        "secure_aggregation": {str(r): v for r, v in strategy.secure_rounds.items()} if secure is not None else None,
    }
    return ArrayRecord(global_model.state_dict()), summary


def check_privacy(dp: DPConfig, secure: SecureAggregationConfig, fed: DictConfig) -> None:
    """Reject DP or secure aggregation with a stage-2 mode they do not cover (DP: lda / ccvr statistics; both: local,
    pooled labels, personalisation).

    Raises
    ------
    ConfigError
        Naming ``federation.stage2_mode`` (or ``stage2_compare``). DP and secure aggregation
        together cover what DP alone covers: the clients clip, the server noises the sums.
    """
    if not (dp.enabled or secure.enabled):
        return
    modes = [str(fed.stage2_mode), *[str(m) for m in fed.get("stage2_compare") or ()]]
    if dp.enabled:
        uncovered = [m for m in modes if m != "federated"]
        if uncovered:
            raise ConfigError(f"privacy.dp covers the QoMFedAvg rounds (stage 1 and stage2_mode=federated); stage-2 "
                              f"mode(s) {uncovered} would release client data it does not noise. Set "
                              "federation.stage2_mode=federated and stage2_compare=[]", "federation.stage2_mode")
        return
    uncovered = [m for m in modes if m not in ("federated", "lda", "ccvr")]
    if uncovered:
        raise ConfigError(f"privacy.secure_aggregation covers stage 1 and the stage-2 modes federated, lda and ccvr; "
                          f"stage-2 mode(s) {uncovered} would release client data it does not sum securely",
                          "federation.stage2_mode")
    if "lda" in modes and fed.class_stats.get("personalise"):
        raise ConfigError("privacy.secure_aggregation: personalisation sends the merged class statistics back and "
                          "collects per-client heads in the clear; set federation.class_stats.personalise=false",
                          "federation.class_stats.personalise")


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


def _qom_prior(rounds: Mapping[int, Mapping[str, Any]], modalities: tuple[str, ...]) -> dict[str, float]:
    """Normalised, example-weighted mean QoM per modality from the last round that reported it."""
    for server_round in sorted(rounds, reverse=True):
        record = rounds[server_round]
        scores = {m: float(record[f"{keys.QOM_PREFIX}{m}"]) for m in modalities  # type: ignore[arg-type]
                  if f"{keys.QOM_PREFIX}{m}" in record}
        if scores:
            return normalise_prior({m: scores.get(m, 0.0) for m in modalities})
    logger.warning("no QoM was reported in stage 1; stage 2 uses a uniform prior")
    return {m: 1.0 / len(modalities) for m in modalities}

