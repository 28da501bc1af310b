"""Centralised (non-federated) training of one method: ``python -m simulations.centralized``.

Examples
--------
``python -m simulations.centralized dataset=utd-mhad method=cosmo label_rate=5 seed=0``
``python -m simulations.centralized method=supervised method.modality=skeleton budget=cpu-utd``

Each run writes, under ``paths.output_dir/<dataset>/<method>/lr<rate>/seed<seed>/<stamp>``:
``config.yaml`` (resolved), ``metrics.jsonl`` (one line per epoch and stage) and
``results.json`` (accuracy, macro_f1, best_epoch_accuracy, confusion, wall time, parameter
counts, the ``device`` trained on and, on a GPU, its ``device_name``, ...), each written
atomically, and with ``save_model=true`` the final model (``model.pt``,
:func:`fedhar.train.save_checkpoint`, CPU tensors). ``device=cuda`` (or ``cuda:N``,
``auto``) trains on a GPU; the default ``cpu`` is bit-reproducible.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from fedhar.config import ExperimentConfig
from fedhar.data.experiment import prepare_experiment
from fedhar.data.loading import load_dataset
from fedhar.errors import ConfigError
from fedhar.pipeline import run_method
from fedhar.train.checkpoint import atomic_write_text
from fedhar.train.device import resolve_device

__all__ = ["RESULT_KEYS", "main", "run_dir_for", "train"]

logger = logging.getLogger(__name__)

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")
RESULTS_FILE = "results.json"
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.yaml"
MODEL_FILE = "model.pt"
RESULT_KEYS = ("accuracy", "macro_f1", "best_epoch_accuracy", "confusion", "wall_time_s", "parameters")
_HASH_CHARS = 8


def run_dir_for(cfg: DictConfig, method_label: str) -> Path:
    """The run folder: ``cfg.run_dir`` if set, else ``output_dir/<dataset>/<method>/lr<r>/seed<s>/<stamp>-<hash>``."""
    if cfg.get("run_dir"):
        return Path(str(cfg.run_dir))
    text = OmegaConf.to_yaml(cfg, resolve=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:_HASH_CHARS]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return (Path(str(cfg.paths.output_dir)) / str(cfg.dataset.name) / method_label / f"lr{cfg.label_rate:g}"
            / f"seed{cfg.seed}" / f"{stamp}-{digest}")


def _container(node: Any) -> dict[str, Any]:
    """A resolved plain dict of a config node."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)  # type: ignore[return-value]


def train(cfg: DictConfig) -> dict[str, Any]:
    """Load the data, run the configured method, write the run folder; return the results.

    Parameters
    ----------
    cfg
        The composed config (configs/config.yaml): dataset, label_rate, seed, method,
        model, quality, stage1, stage2, supervised, paths; optional ``device`` (default
        ``cpu``), ``num_threads``, ``run_dir`` and ``save_model``.

    Returns
    -------
    dict
        The results written to ``results.json`` plus ``run_dir``.

    Raises
    ------
    fedhar.errors.ConfigError
        For an unknown ``device``, or a CUDA device this machine does not have (checked
        before any data is loaded).
    """
    device = resolve_device(str(cfg.get("device") or "cpu"))
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    started = time.perf_counter()
    exp = ExperimentConfig.from_mapping(_container(cfg), cache_dir=cfg.paths.get("cache_dir"))
    if exp.method is None:
        raise ConfigError("no method chosen (e.g. method=cosmo)", "method")
    method = exp.method
    run_dir = run_dir_for(cfg, method.label)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / CONFIG_FILE, OmegaConf.to_yaml(cfg, resolve=True))
    logger.info("run folder %s, device %s", run_dir, device)

    experiment = prepare_experiment(load_dataset(exp.dataset), exp.dataset, exp.label_rate, exp.seed)
    checkpoint = run_dir / MODEL_FILE if cfg.get("save_model") else None
    results = run_method(method, experiment, exp.model, exp.stage1, exp.stage2,
                         exp.quality if method.use_qom else None, exp.seed,
                         supervised_cfg=exp.supervised, checkpoint_path=checkpoint, device=device)

    history = results.pop("history")
    lines = [json.dumps(rec) for stage in history.values() for rec in stage]
    atomic_write_text(run_dir / METRICS_FILE, "\n".join(lines) + "\n")
    results.update({"dataset": exp.dataset.name, "protocol": exp.dataset.protocol,
                    "label_rate": exp.label_rate, "run_dir": str(run_dir)})
    results["wall_time_s"]["run"] = time.perf_counter() - started
    atomic_write_text(run_dir / RESULTS_FILE, json.dumps(results, indent=2))
    return results


def _summary(results: dict[str, Any]) -> str:
    """One short human-readable line."""
    return (f"{results['dataset']} {results['method']} lr={results['label_rate']:g}% seed={results['seed']}: "
            f"accuracy {100 * results['accuracy']:.1f}%, macro-F1 {100 * results['macro_f1']:.1f}% "
            f"(best-epoch accuracy {100 * results['best_epoch_accuracy']:.1f}%, selects on test) "
            f"in {results['wall_time_s']['run']:.0f} s -> {results['run_dir']}")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: only calls :func:`train` and prints the summary."""
    print(_summary(train(cfg)))


if __name__ == "__main__":
    main()
