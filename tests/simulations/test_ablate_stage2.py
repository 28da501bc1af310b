"""The stage-2 ablation: one stage 1, several stage-2 variants from the same encoders."""

from __future__ import annotations

import json
from pathlib import Path

from simulations.ablate_stage2 import run

BASE = ["dataset=synthetic", "label_rate=20", "budget=tiny", "model=compact", "seed=0"]


def test_variants__share_stage1_and_differ_in_stage2(tmp_path: Path) -> None:
    variants = {"paper": ["recipe=paper"], "frozen": ["stage2.encoder_mode=frozen"],
                "paper-again": ["recipe=paper"]}
    results = run(tmp_path, BASE, [], variants)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["variants"].keys() == variants.keys() == results["variants"].keys()
    for v in saved["variants"].values():
        assert 0.0 <= v["accuracy"] <= 1.0 and 0.0 <= v["macro_f1"] <= 1.0
    # same stage 1, same variant: the same numbers; the prior is a distribution over modalities
    assert saved["variants"]["paper"]["accuracy"] == saved["variants"]["paper-again"]["accuracy"]
    assert abs(sum(saved["prior"].values()) - 1.0) < 1e-9
    (checkpoint,) = tmp_path.glob("stage1-*.pt")
    stamp = checkpoint.stat().st_mtime_ns
    # a second run with the same base reads stage 1 back instead of training it again
    again = run(tmp_path, BASE, [], {"paper": ["recipe=paper"]})
    assert checkpoint.stat().st_mtime_ns == stamp
    assert again["variants"]["paper"]["accuracy"] == saved["variants"]["paper"]["accuracy"]
