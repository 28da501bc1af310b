"""config_mapping.build: the one mapping -> config dataclass builder (keys, conversions, errors)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from fedhar.config_mapping import build
from fedhar.errors import ConfigError


@dataclass(frozen=True)
class Inner:
    rate: float = 0.5
    sizes: tuple[int, ...] = (1,)


@dataclass(frozen=True)
class Outer:
    name: str
    steps: int = 1
    kernels: tuple[tuple[int, ...], ...] = ()
    pair: tuple[float, float] = (0.0, 1.0)
    root: Path | None = None
    flag: bool = False
    mode: Literal["a", "b"] = "a"
    inner: Inner = field(default_factory=Inner)
    maybe: Inner | None = None


class TestBuild:
    def test_yaml_values__converted_to_field_types(self) -> None:
        cfg = {"name": "x", "steps": 3.0, "kernels": [[5, 3], [3]], "pair": [1, 2], "root": "~/data",
               "inner": {"rate": 1, "sizes": [2, 4]}, "maybe": {"sizes": []}, "_target_": "ignored"}
        out = build(Outer, cfg, "grp")
        assert out == Outer(name="x", steps=3, kernels=((5, 3), (3,)), pair=(1.0, 2.0),
                            root=Path("~/data").expanduser(), inner=Inner(rate=1.0, sizes=(2, 4)),
                            maybe=Inner(sizes=()))
        assert type(out.steps) is int and type(out.pair[0]) is float and type(out.inner.rate) is float

    def test_missing_keys_keep_defaults__nested_from_class_defaults(self) -> None:
        assert build(Outer, {"name": "x", "inner": {"sizes": [7]}}, "grp") == Outer(name="x", inner=Inner(sizes=(7,)))

    @pytest.mark.parametrize(
        ("cfg", "culprit", "match"),
        [
            ({"name": "x", "stpes": 2}, "grp", r"unknown keys \['stpes'\]; known: \["),
            ({}, "grp", r"missing keys \['name'\]"),
            ({"name": "x", "steps": 2.5}, "grp.steps", "whole number, got 2.5"),
            ({"name": "x", "steps": "3"}, "grp.steps", "expected a number, got '3'"),
            ({"name": "x", "steps": True}, "grp.steps", "expected a number, got True"),
            ({"name": "x", "flag": "yes"}, "grp.flag", "true or false"),
            ({"name": "x", "kernels": "53"}, "grp.kernels", "expected a list"),
            ({"name": "x", "inner": {"rate": "fast"}}, "grp.inner.rate", "expected a number"),
            ({"name": "x", "inner": {"typo": 1}}, "grp.inner", r"unknown keys \['typo'\]"),
            ({"name": "x", "inner": 3}, "grp.inner", "expected a mapping"),
        ],
    )
    def test_bad_input__config_error_naming_the_key(self, cfg: dict, culprit: str, match: str) -> None:
        with pytest.raises(ConfigError, match=match) as err:
            build(Outer, cfg, "grp")
        assert err.value.culprit == culprit
