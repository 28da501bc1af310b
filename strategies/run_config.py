"""Typed run-config keys a Flower user passes directly, mapped onto Hydra overrides of configs/federated.yaml.

``flwr run . --run-config "label-rate=10 seed=1 dataset='usc-had'"`` sets the common knobs;
``hydra-overrides`` stays for everything else. A key left at its pyproject default ``""``
keeps the YAML default. Setting the same Hydra key both ways is an error (which one was
meant is not guessable). The run folder follows from the run config and the run id
(:func:`run_folder`), so launchers find a run's results without reading its log.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from fedhar import keys
from fedhar.errors import ConfigError

__all__ = ["CONFIG_DIR", "CONFIG_NAME", "RUN_CONFIG_KEYS", "compose_config", "hydra_overrides", "output_root",
           "run_folder"]

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
#: configs/federated.yaml: the federated defaults (compact model, strategy, federation groups).
CONFIG_NAME = "federated"


@dataclass(frozen=True)
class _Key:
    """A typed run-config key: the Hydra key it sets and the check of its value."""

    hydra: str
    kind: str
    valid: Callable[[object], bool]


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_name(v: object) -> bool:
    return isinstance(v, str) and v.replace("-", "").replace("_", "").isalnum()


RUN_CONFIG_KEYS: dict[str, _Key] = {
    "dataset": _Key("dataset", "a dataset config name, e.g. 'usc-had'", _is_name),
    "label-rate": _Key("label_rate", "a number > 0 (percent)",
                       lambda v: isinstance(v, int | float) and not isinstance(v, bool) and v > 0),
    "seed": _Key("seed", "an integer >= 0", lambda v: _is_int(v) and v >= 0),  # type: ignore[operator]
    "stage1-rounds": _Key("federation.stage1_rounds", "an integer >= 1", lambda v: _is_int(v) and v >= 1),  # type: ignore[operator]
    "stage1-local-epochs": _Key("federation.stage1_local_epochs", "an integer >= 1",
                                lambda v: _is_int(v) and v >= 1),  # type: ignore[operator]
    "stage2-rounds": _Key("federation.stage2_rounds", "an integer >= 1", lambda v: _is_int(v) and v >= 1),  # type: ignore[operator]
    "stage2-mode": _Key("federation.stage2_mode", "a stage-2 mode, e.g. 'lda'", _is_name),
    "strategy": _Key("strategy", "a strategy config name, e.g. 'fedavg'", _is_name),
}
"""Run-config key -> the Hydra key it sets (README, pyproject ``[tool.flwr.app.config]``)."""


def hydra_overrides(run_config: Mapping[str, object]) -> list[str]:
    """The Hydra overrides of a run config: the typed keys that are set, then ``hydra-overrides``.

    Raises
    ------
    ConfigError
        If a typed key has a value of the wrong type or range, or its Hydra key is also in
        ``hydra-overrides``.
    """
    free = str(run_config.get(keys.HYDRA_OVERRIDES, "") or "").split()
    given = {item.split("=", 1)[0].lstrip("+~") for item in free}
    typed = []
    for name, key in RUN_CONFIG_KEYS.items():
        value = run_config.get(name, "")
        if value == "" or value is None:
            continue
        if not key.valid(value):
            raise ConfigError(f"run-config {name}={value!r}: expected {key.kind}", name)
        if key.hydra in given:
            raise ConfigError(f"{key.hydra} is set twice: by run-config {name!r} and in {keys.HYDRA_OVERRIDES!r}; "
                              "keep one", name)
        typed.append(f"{key.hydra}={value}")
    return typed + free


def compose_config(overrides: str) -> DictConfig:
    """Compose configs/federated.yaml with space-separated Hydra ``overrides`` (run-config ``hydra-overrides``)."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(CONFIG_NAME, overrides=overrides.split())


def output_root(run_config: Mapping[str, object]) -> Path:
    """``paths.output_dir`` of a run config, resolved as the ServerApp resolves it (same overrides, ``FEDHAR_OUTPUT_DIR``)."""
    return Path(compose_config(" ".join(hydra_overrides(run_config))).paths.output_dir).expanduser().resolve()


def run_folder(root: Path, run_config: Mapping[str, object], run_id: int) -> Path:
    """The folder a run writes under ``root`` (``paths.output_dir``): ``<run id>``, or the resumed run's under ``resume``.

    A launcher finds it with :func:`output_root` as long as the SuperLink runs with the
    launcher's environment.
    """
    resume = str(run_config.get(keys.RESUME, "") or "")
    return root / (resume or str(run_id))
