"""Stage-2 ablation: one Cosmo stage 1, then several stage-2 variants from the same encoders.

``python -m simulations.ablate_stage2 --out DIR --base "dataset=utd-mhad label_rate=5 seed=0 budget=cpu-utd"
--variant paper "recipe=paper" --variant frozen "stage2.encoder_mode=frozen" ...``

Every variant is a list of Hydra overrides applied on top of ``--base`` (configs/config.yaml);
stage 1 runs once with the base config (``--stage1`` adds overrides for it alone), so the
variants differ only in what they change in stage 2 (``stage2.*`` and ``model.classifier.*``).
The stage-1 model is kept in ``DIR/stage1.pt`` and reused when the script runs again with the
same base. ``DIR/results.json`` holds every variant's last-epoch accuracy and macro-F1, its
best-epoch accuracy (selects on the test set, labelled as such) and its overrides; it is
rewritten after every variant.

``python -m simulations.ablate_stage2 --summarise DIR [DIR ...] --out SUMMARY_DIR`` gathers the
``results.json`` of several ablation folders (one per seed, same variants) into
``SUMMARY_DIR/summary.json`` and ``table.md``: mean +- std over the folders per variant.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from fedhar.config import ExperimentConfig
from fedhar.data.experiment import prepare_experiment
from fedhar.data.loading import load_dataset
from fedhar.losses.fusion import CosmoFusionLoss, cosmo_objective
from fedhar.models.contrastive import ContrastiveFusionModel
from fedhar.models.fusion_classifier import build_fusion_classifier_model
from fedhar.pipeline import compute_modality_prior
from fedhar.train.checkpoint import atomic_write_text
from fedhar.train.evaluate import evaluate
from fedhar.train.loop import TEST_ACCURACY
from fedhar.train.pretrain import pretrain
from fedhar.train.seeding import derive_seed, seed_everything
from fedhar.train.stage2 import run_stage2
from simulations.centralized import CONFIG_DIR
from simulations.grid import mean_std

logger = logging.getLogger(__name__)


def _plain(node: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]


def _compose(overrides: Sequence[str]) -> DictConfig:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def run(out: Path, base: Sequence[str], stage1_extra: Sequence[str], variants: dict[str, list[str]],
        num_threads: int = 1) -> dict[str, Any]:
    """Stage 1 once (or read back), then every stage-2 variant; returns and writes the results."""
    torch.set_num_threads(num_threads)
    cfg = _compose([*base, *stage1_extra])
    exp = ExperimentConfig.from_mapping(_plain(cfg), cache_dir=cfg.paths.get("cache_dir"))
    seed = exp.seed
    experiment = prepare_experiment(load_dataset(exp.dataset), exp.dataset, exp.label_rate, seed)
    specs = tuple(experiment.info.modality(n) for n in experiment.info.modality_names)
    seed_everything(derive_seed(seed, "model"))
    stage1 = ContrastiveFusionModel(specs, exp.model)
    out.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(OmegaConf.to_yaml(cfg, resolve=True).encode()).hexdigest()[:16]
    checkpoint = out / f"stage1-{key}.pt"
    started = time.perf_counter()
    if checkpoint.is_file():
        stage1.load_state_dict(torch.load(checkpoint))
    else:
        loss = CosmoFusionLoss(**_plain(cfg.method.loss), copies=exp.stage1.augment.views)
        pretrain(stage1, cosmo_objective(loss), experiment.unlabeled, exp.stage1, derive_seed(seed, "stage1"))
        tmp = checkpoint.with_suffix(".tmp")
        torch.save(stage1.state_dict(), tmp)
        tmp.replace(checkpoint)
    prior = compute_modality_prior(stage1, experiment, exp.quality, torch.device("cpu"))
    results: dict[str, Any] = {"base": list(base), "stage1_overrides": list(stage1_extra),
                               "stage1_seconds": time.perf_counter() - started, "prior": prior,
                               "best_epoch_note": "max test accuracy over evaluated epochs: selects on the test set",
                               "variants": {}}
    for name, overrides in variants.items():
        vcfg = _compose([*base, *stage1_extra, *overrides])
        variant = ExperimentConfig.from_mapping(_plain(vcfg), cache_dir=vcfg.paths.get("cache_dir"))
        seed_everything(derive_seed(seed, "classifier"))
        model = build_fusion_classifier_model(specs, experiment.info.num_classes, variant.model,
                                              encoders=stage1.encoders, qom_prior=prior)
        t0 = time.perf_counter()
        model, history = run_stage2(model, experiment.labeled, variant.stage2, derive_seed(seed, "stage2"),
                                    eval_data=experiment.test)
        final = evaluate(model, experiment.test)
        _, best = history.best(TEST_ACCURACY)
        results["variants"][name] = {"overrides": overrides, "accuracy": final.accuracy,
                                     "macro_f1": final.macro_f1, "best_epoch_accuracy": best,
                                     "seconds": time.perf_counter() - t0}
        logger.info("%s: accuracy %.1f %%, macro-F1 %.1f %% (best epoch %.1f %%, selects on test)", name,
                    100 * final.accuracy, 100 * final.macro_f1, 100 * best)
        atomic_write_text(out / "results.json", json.dumps(results, indent=2))
    return results


def summarise(folders: Sequence[Path], out: Path) -> dict[str, Any]:
    """Mean +- std over ``folders`` (one ablation each, e.g. one per seed) of every variant they all ran."""
    runs = []
    for folder in folders:
        path = folder / "results.json"
        if not path.is_file():
            raise FileNotFoundError(f"no ablation results in {folder} (expected {path})")
        runs.append(json.loads(path.read_text(encoding="utf-8")))
    names = [n for n in runs[0]["variants"] if all(n in r["variants"] for r in runs)]
    rows = []
    for name in names:
        cells = [r["variants"][name] for r in runs]
        row: dict[str, Any] = {"variant": name, "overrides": cells[0]["overrides"], "n": len(cells)}
        for key in ("accuracy", "macro_f1", "best_epoch_accuracy"):
            values = [100 * c[key] for c in cells]
            mean, std = mean_std(values)
            row[key] = {"per_run": values, "mean": mean, "std": std}
        rows.append(row)
    summary = {"runs": [{"folder": f.name, "base": r["base"], "stage1_overrides": r["stage1_overrides"],
                         "prior": r["prior"]} for f, r in zip(folders, runs, strict=True)],
               "best_epoch_note": runs[0]["best_epoch_note"], "rows": rows}
    lines = ["| variant | accuracy | macro-F1 | best epoch (selects on test) | per run (accuracy) |", "|---|---|---|---|---|"]
    for row in rows:
        a, f, b = row["accuracy"], row["macro_f1"], row["best_epoch_accuracy"]
        lines.append(f"| {row['variant']} | {a['mean']:.1f} ± {a['std']:.1f} | {f['mean']:.1f} ± {f['std']:.1f} | "
                     f"{b['mean']:.1f} ± {b['std']:.1f} | {', '.join(f'{v:.1f}' for v in a['per_run'])} |")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    atomic_write_text(out / "table.md", "\n".join(lines) + "\n")
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line and run the ablation (or summarise finished ones)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--base", default="", help="Hydra overrides of every run (dataset, label_rate, seed, ...)")
    parser.add_argument("--stage1", default="", help="extra Hydra overrides for stage 1 (and every variant)")
    parser.add_argument("--variant", nargs=2, action="append", metavar=("NAME", "OVERRIDES"), default=[],
                        help="a stage-2 variant: name and space-separated overrides (repeatable)")
    parser.add_argument("--num-threads", type=int, default=1)
    parser.add_argument("--summarise", nargs="+", type=Path, metavar="DIR",
                        help="summarise these finished ablation folders into --out instead of running")
    args = parser.parse_args(argv)
    if args.summarise:
        summarise(args.summarise, args.out)
        print((args.out / "table.md").read_text(encoding="utf-8"), end="")
        return
    if not args.variant:
        parser.error("give at least one --variant NAME OVERRIDES")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    variants = {name: overrides.split() for name, overrides in args.variant}
    run(args.out, args.base.split(), args.stage1.split(), variants, args.num_threads)


if __name__ == "__main__":
    main()
