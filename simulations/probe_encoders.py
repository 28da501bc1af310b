"""Supervised probe of the IMU encoder layouts: how far can each go on held-out subjects?

``python -m simulations.probe_encoders --out DIR [--protocol default] [--seed 0]``

Trains each IMU encoder layout (``grid``: Cosmo's 2-D convs; ``temporal``: 1-D convs over
time, mean and max pooled) end to end with a linear classifier on the concatenated features,
from scratch, with and without the recipe's rotation augmentation, on (a) the split's labeled
windows (USC-HAD 1 %) and (b) every training window with its label (an upper bound no
few-label method can pass), and the classical random forest on both. No pretraining: it
asks whether the encoder can transfer to the held-out subjects at all, which is what the
contrastive stage 1 then has to build on (docs/learning.md section 13). Writes
``DIR/probe.json`` (config, every accuracy) and prints a table.

``--variants`` instead trains each variant of the temporal stack (:data:`VARIANTS`: wider,
deeper, longer kernels, full-sphere rotations, magnitude channels, dropout) the same way on
the 1 % labeled windows of every ``--protocols`` fold and ``--seeds`` seed, beside the random
forest, and writes ``DIR/variants.json`` and a table of each variant's mean. A supervised
screen only: what wins here need not win under contrastive pretraining (section 13 has a case).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch import nn
from tqdm import tqdm

from fedhar.baselines.classical import ClassicalConfig, ClassicalModel
from fedhar.config import ExperimentConfig
from fedhar.data.dataset import HARDataset
from fedhar.data.experiment import ExperimentData, prepare_experiment
from fedhar.data.loading import load_dataset
from fedhar.models.config import EncoderConfig
from fedhar.models.encoders import build_encoder, encoder_out_shape
from fedhar.train.augment import random_rotations, rotate_triads
from fedhar.train.checkpoint import atomic_write_text
from simulations.centralized import CONFIG_DIR

logger = logging.getLogger(__name__)


class ProbeClassifier(nn.Module):
    """One encoder per modality, flattened features concatenated, one linear layer."""

    def __init__(self, data: HARDataset, encoder_cfg: EncoderConfig) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict({m: build_encoder(data.info.modality(m), encoder_cfg) for m in data.data})
        width = sum(int(np.prod(encoder_out_shape(enc))) for enc in self.encoders.values())
        self.linear = nn.Linear(width, data.info.num_classes)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.linear(torch.cat([self.encoders[m](x).flatten(1) for m, x in batch.items()], dim=1))


def _train(data: HARDataset, test: HARDataset, encoder_cfg: EncoderConfig, rotation_deg: float,
           epochs: int, batch_size: int, seed: int) -> float:
    """Last-epoch test accuracy (%) of a probe trained on ``data`` from scratch."""
    torch.manual_seed(seed)
    model = ProbeClassifier(data, encoder_cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [int(epochs * 0.7), int(epochs * 0.9)], gamma=0.1)
    xs = {m: torch.from_numpy(np.asarray(a)) for m, a in data.data.items()}
    ys = torch.from_numpy(np.asarray(data.labels))
    for _ in tqdm(range(epochs), desc=f"{encoder_cfg.imu_layout} rot {rotation_deg:g}", leave=False):
        model.train()
        order = torch.randperm(len(ys))
        for start in range(0, len(ys), batch_size):
            idx = order[start:start + batch_size]
            batch = {m: x[idx] for m, x in xs.items()}
            if rotation_deg > 0:
                batch = {m: rotate_triads(x, random_rotations(len(idx), rotation_deg)) for m, x in batch.items()}
            loss = nn.functional.cross_entropy(model(batch), ys[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    model.eval()
    with torch.no_grad():
        pred = model({m: torch.from_numpy(np.asarray(a)) for m, a in test.data.items()}).argmax(1).numpy()
    return round(100.0 * float((pred == test.labels).mean()), 1)


def _concat(a: HARDataset, b: HARDataset) -> HARDataset:
    """Rows of ``a`` then ``b`` (the labeled and unlabeled training windows, all with labels)."""
    return dataclasses.replace(
        a, data={m: np.concatenate([a.data[m], b.data[m]]) for m in a.data},
        labels=np.concatenate([a.labels, b.labels]), subjects=np.concatenate([a.subjects, b.subjects]),
        trials=np.concatenate([a.trials, b.trials]), extra={})


# Changes to the recipe's temporal stack (model.encoder.temporal_imu) and the rotation range
# (None: the dataset's orientation spread) that --variants screens.
VARIANTS: dict[str, tuple[dict[str, Any], float | None]] = {
    "default": ({}, None),
    "wide (64-128 channels)": ({"channels": (64, 128, 128, 128)}, None),
    "deep (5 blocks, 4 pools)": ({"channels": (32, 64, 64, 64, 64), "kernels": ((5,), (5,), (5,), (5,), (3,)),
                                  "pools": ((2,), (2,), (2,), (2,), (1,))}, None),
    "kernels 9": ({"kernels": ((9,), (9,), (9,), (5,))}, None),
    "rotations up to 180": ({}, 180.0),
    "magnitude channels": ({"magnitude": True}, None),
    "dropout 0.2": ({"dropout": 0.2}, None),
}


def _experiment(protocol: str, seed: int) -> tuple[list[str], ExperimentConfig, ExperimentData]:
    """The USC-HAD 1 % experiment of one fold and seed under the default recipe, and its data."""
    overrides = ["dataset=usc-had", "label_rate=1", f"seed={seed}", "model=compact", f"dataset.protocol={protocol}"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    exp = ExperimentConfig.from_mapping(OmegaConf.to_container(cfg, resolve=True),  # type: ignore[arg-type]
                                        cache_dir=cfg.paths.get("cache_dir"))
    return overrides, exp, prepare_experiment(load_dataset(exp.dataset), exp.dataset, exp.label_rate, exp.seed)


def _forest_accuracy(train: HARDataset, test: HARDataset, seed: int) -> float:
    forest = ClassicalModel(tuple(train.data), ClassicalConfig(), seed).fit(train)
    return round(100.0 * float((forest.predict(test) == test.labels).mean()), 1)


def run_variants(protocols: list[str], seeds: list[int], num_threads: int) -> dict[str, Any]:
    """Every variant of :data:`VARIANTS` and the forest on the 1 % labels of each fold and seed."""
    torch.set_num_threads(num_threads)
    rows: list[dict[str, Any]] = []
    for protocol in protocols:
        for seed in seeds:
            _, exp, data = _experiment(protocol, seed)
            rows.append({"protocol": protocol, "seed": seed, "variant": "random forest",
                         "accuracy": _forest_accuracy(data.labeled, data.test, seed)})
            spread = float(exp.dataset.orientation_spread_deg)
            for name, (changes, rotation) in VARIANTS.items():
                stack = dataclasses.replace(exp.model.encoder.temporal_imu, **changes)
                encoder_cfg = dataclasses.replace(exp.model.encoder, imu_layout="temporal", temporal_imu=stack)
                started = time.perf_counter()
                acc = _train(data.labeled, data.test, encoder_cfg, spread if rotation is None else rotation, 150, 64,
                             seed)
                rows.append({"protocol": protocol, "seed": seed, "variant": name, "accuracy": acc,
                             "seconds": round(time.perf_counter() - started, 1)})
                logger.info("%s", rows[-1])
    means = {v: round(float(np.mean([r["accuracy"] for r in rows if r["variant"] == v])), 1)
             for v in ["random forest", *VARIANTS]}
    variants = {name: {"changes": changes, "rotation_deg": rotation} for name, (changes, rotation) in VARIANTS.items()}
    return {"protocols": protocols, "seeds": seeds, "variants": variants, "rows": rows, "mean": means}


def run_probe(protocol: str, seed: int, num_threads: int) -> dict[str, Any]:
    """Every probe accuracy of one USC-HAD split (labeled = the 1 % split of ``seed``)."""
    torch.set_num_threads(num_threads)
    overrides, exp, data = _experiment(protocol, seed)
    everything = _concat(data.labeled, data.unlabeled)
    spread = float(exp.dataset.orientation_spread_deg)
    rows: list[dict[str, Any]] = []
    # 150 epochs on the 227 labeled windows, 4 on all ~22,700 (about 2,400 and 700 steps).
    for labels, train, epochs, batch in (("1 %", data.labeled, 150, 64), ("all", everything, 4, 128)):
        started = time.perf_counter()
        acc = _forest_accuracy(train, data.test, seed)
        rows.append({"labels": labels, "n": len(train), "model": "random forest", "rotation_deg": 0.0,
                     "accuracy": acc, "seconds": round(time.perf_counter() - started, 1)})
        for layout in ("grid", "temporal"):
            encoder_cfg = dataclasses.replace(exp.model.encoder, imu_layout=layout)
            for rotation in (0.0, spread):
                started = time.perf_counter()
                acc = _train(train, data.test, encoder_cfg, rotation, epochs, batch, seed)
                rows.append({"labels": labels, "n": len(train), "model": f"{layout} encoder + linear",
                             "rotation_deg": rotation, "accuracy": acc,
                             "seconds": round(time.perf_counter() - started, 1)})
                logger.info("%s", rows[-1])
    return {"protocol": protocol, "seed": seed, "overrides": overrides, "rows": rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--protocol", default="default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-threads", type=int, default=2)
    parser.add_argument("--variants", action="store_true", help="screen the temporal stack's variants instead")
    parser.add_argument("--protocols", nargs="+", default=["default", "fold-11-12", "fold-1-2"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.variants:
        screen = run_variants(args.protocols, args.seeds, args.num_threads)
        atomic_write_text(args.out / "variants.json", json.dumps(screen, indent=2) + "\n")
        cells = [(p, s) for p in args.protocols for s in args.seeds]
        print("| variant | mean | " + " | ".join(f"{p} s{s}" for p, s in cells) + " |\n|---|---|"
              + "---|" * len(cells))
        for name, mean in screen["mean"].items():
            accs = [next(r["accuracy"] for r in screen["rows"] if (r["protocol"], r["seed"], r["variant"]) == (p, s, name))
                    for p, s in cells]
            print(f"| {name} | {mean} | " + " | ".join(map(str, accs)) + " |")
        return
    result = run_probe(args.protocol, args.seed, args.num_threads)
    atomic_write_text(args.out / "probe.json", json.dumps(result, indent=2) + "\n")
    print("| labels | windows | model | rotation | accuracy |\n|---|---|---|---|---|")
    for r in result["rows"]:
        print(f"| {r['labels']} | {r['n']} | {r['model']} | {r['rotation_deg']:g} | {r['accuracy']} |")


if __name__ == "__main__":
    main()
