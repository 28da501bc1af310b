"""Plain mapping (a resolved YAML group) -> frozen config dataclass: the one builder every config uses.

Each config dataclass's ``from_mapping`` calls :func:`build`, which checks the keys against
the dataclass's fields, converts YAML's values to the field types (lists to tuples, ints to
floats, strings to paths, nested mappings to nested config dataclasses) and leaves range
checks to the dataclass's ``__post_init__``. Every failure is a :class:`ConfigError` that
names the config group.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import MISSING, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

from fedhar.errors import ConfigError

__all__ = ["build", "check_known_keys"]

T = TypeVar("T")


def check_known_keys(cls: type, cfg: Mapping[str, Any], where: str) -> None:
    """Raise :class:`ConfigError` naming ``where`` if ``cfg`` has a key that is not a field of dataclass ``cls``."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ConfigError(f"unknown keys {unknown}; known: {sorted(known)}", where)


def build(cls: type[T], cfg: Mapping[str, Any], where: str) -> T:
    """``cls(**cfg)`` with the keys checked and the values converted to the field types.

    Keys starting with ``_`` (Hydra/YAML bookkeeping) are ignored; a missing key keeps the
    field's default. A nested config dataclass is built from its own mapping, from its own
    class defaults.
    """
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"expected a mapping, got {type(cfg).__name__}: {cfg!r}", where)
    given = {k: v for k, v in cfg.items() if not str(k).startswith("_")}
    check_known_keys(cls, given, where)
    hints = get_type_hints(cls)
    kw = {k: _convert(hints[k], v, f"{where}.{k}") for k, v in given.items()}
    required = sorted(f.name for f in fields(cls)  # type: ignore[arg-type]
                      if f.init and f.default is MISSING and f.default_factory is MISSING and f.name not in kw)
    if required:
        raise ConfigError(f"missing keys {required}", where)
    try:
        return cls(**kw)
    except TypeError as err:  # a value of the wrong kind that __post_init__ could not compare
        raise ConfigError(str(err), where) from err


def _convert(tp: Any, value: Any, where: str) -> Any:
    """``value`` as the annotated type ``tp`` where YAML cannot say it (tuples, floats, paths, nested configs)."""
    if value is None:
        return None
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        return _convert(options[0], value, where) if len(options) == 1 else value
    if is_dataclass(tp) and isinstance(tp, type):
        return value if isinstance(value, tp) else build(tp, value, where)
    if origin is tuple:
        if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
            raise ConfigError(f"expected a list, got {value!r}", where)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, where) for v in value)
        if args and len(args) == len(value):
            return tuple(_convert(a, v, where) for a, v in zip(args, value, strict=True))
        return tuple(value)
    if tp is float or tp is int:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"expected a number, got {value!r}", where)
        if tp is int and value != int(value):
            raise ConfigError(f"expected a whole number, got {value!r}", where)
        return tp(value)
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"expected true or false, got {value!r}", where)
    if tp is Path and isinstance(value, str | Path):
        return Path(value).expanduser()
    if origin in (dict, Mapping) and isinstance(value, Mapping):
        return dict(value)
    return value
