"""The stage-2 ablation: one stage 1, several stage-2 variants from the same encoders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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


def test_summarise__mean_std_per_variant_over_folders(tmp_path: Path) -> None:
    from simulations.ablate_stage2 import summarise

    def ablation(name: str, accs: dict[str, float]) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        variants = {v: {"overrides": [f"x={v}"], "accuracy": a, "macro_f1": a / 2, "best_epoch_accuracy": a + 0.1}
                    for v, a in accs.items()}
        (folder / "results.json").write_text(json.dumps({"base": ["seed=0"], "stage1_overrides": [], "prior": {},
                                                         "best_epoch_note": "selects on test", "variants": variants}))
        return folder

    # Prepare: two seeds; variant "c" ran on one only (left out)
    folders = [ablation("s0", {"a": 0.5, "b": 0.6, "c": 0.9}), ablation("s1", {"a": 0.7, "b": 0.6})]
    # Execute
    summary = summarise(folders, tmp_path / "out")
    # Assert
    rows = {r["variant"]: r for r in summary["rows"]}
    assert set(rows) == {"a", "b"}
    assert rows["a"]["accuracy"]["mean"] == pytest.approx(60.0)
    assert rows["a"]["accuracy"]["std"] == pytest.approx(14.142, abs=1e-3)
    assert rows["b"]["macro_f1"]["per_run"] == pytest.approx([30.0, 30.0])
    assert rows["a"]["best_epoch_accuracy"]["mean"] == pytest.approx(70.0)
    assert "| a | 60.0 ± 14.1 |" in (tmp_path / "out" / "table.md").read_text()


def test_summarise__missing_results__names_the_folder(tmp_path: Path) -> None:
    from simulations.ablate_stage2 import summarise

    with pytest.raises(FileNotFoundError, match="nothing-here"):
        summarise([tmp_path / "nothing-here"], tmp_path / "out")
