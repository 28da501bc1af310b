"""The unknown-key check every config dataclass's ``from_mapping`` runs before it builds itself."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from fedhar.errors import ConfigError

__all__ = ["check_known_keys"]


def check_known_keys(cls: type, cfg: Mapping[str, Any], where: str, what: str = "") -> None:
    """Raise :class:`ConfigError` naming ``where`` if ``cfg`` has a key that is not a field of dataclass ``cls``.

    ``what`` prefixes the word "keys" in the message (e.g. ``"method "``).
    """
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ConfigError(f"unknown {what}keys {unknown}; known: {sorted(known)}", where)
