"""The closing lines and the convergence plot of a federated run, from hand-made results."""

from __future__ import annotations

import json
from pathlib import Path

from simulations.run_summary import centralized_reference, closing_summary, plot_convergence


def _results(stage2: dict) -> dict:
    return {
        "run_id": 42, "test_subjects": [7, 8], "wall_time_s": 61.0,
        "config": {"dataset": {"name": "utd-mhad"}, "label_rate": 5, "seed": 0,
                   "federation": {"stage1_local_epochs": 4, "stage2_local_epochs": 10}},
        "normalization": {"class_counts": {"1": [4] * 27, "2": [4] * 27}},
        "stage1": {"rounds": {"1": {"train-loss": 3.0}, "2": {"train-loss": 2.5}},
                   "central": {"0": {"probe-accuracy": 0.2}, "2": {"probe-accuracy": 0.7}},
                   "bytes_down_per_client_round": 1.5e6, "bytes_up_per_client_round": 2.0e6},
        "stage2": stage2, "final": stage2["final"],
        "stage2_compare": {"federated": {"final": {"accuracy": 0.34, "macro_f1": 0.26}}},
    }


LDA = {"mode": "lda", "final": {"accuracy": 0.642, "macro_f1": 0.589}, "bytes_down_per_client_round": 1.0e6,
       "bytes_up_per_client_round": 16.0e6, "class_stats": {"num_merged": 6, "num_rejected": 0}}


def _reference(repo: Path, rows: list[dict]) -> Path:
    path = repo / "benchmarks" / "learning" / "utd" / "summary.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"rows": rows}))
    return repo


class TestClosingSummary:
    def test_summary__personalised_means(self, tmp_path: Path) -> None:
        mean = {"own_accuracy_global": 0.5, "own_accuracy_personal": 0.7, "test_accuracy_global": 0.64,
                "test_accuracy_personal": 0.6}
        stage2 = {**LDA, "personalised": {"clients": {"subject-1": {}, "subject-2": {}}, "mean": mean}}
        text = closing_summary(_results(stage2), Path("/r/results.json"), None, repo=tmp_path)
        assert ("personalised heads, mean over 2 clients: own held-out rows 50.0 % (global head) -> 70.0 % "
                "(personal); held-out subjects 64.0 % -> 60.0 %") in text

    def test_summary__dp_epsilon(self, tmp_path: Path) -> None:
        dp = {"epsilon": 7.912, "delta": 1e-5, "num_releases": 14, "noise_multiplier": 1.1, "clip_norm": 2.0,
              "noise_std": 1.4667}
        text = closing_summary({**_results(LDA), "privacy": {"dp": dp}}, Path("/r/results.json"), None, repo=tmp_path)
        assert ("differential privacy: epsilon 7.91 at delta 1e-05 over 14 noised aggregations (noise multiplier "
                "1.1, clip 2, noise std 1.47") in text
        assert "differential privacy" not in closing_summary(_results(LDA), Path("/r/results.json"), None, repo=tmp_path)

    def test_summary__accuracy_reference_rounds_bytes_and_files(self, tmp_path: Path) -> None:
        repo = _reference(tmp_path, [{"method": "cosmo", "label_rate": 5.0, "seeds": [0, 1, 2],
                                      "accuracy": [61.24, 4.97]}])
        text = closing_summary(_results(LDA), Path("/r/results.json"), Path("/r/convergence.png"), repo=repo)
        lines = text.splitlines()
        assert lines[0].endswith("stage 2 lda: accuracy 64.2 %, macro-F1 58.9 % on held-out subjects [7, 8] "
                                 "(chance 3.7 %)")
        assert "stage 2 federated from the same encoders: accuracy 34.0 %" in lines[1]
        assert "61.2 ± 5.0 % accuracy over 3 seeds (committed benchmark benchmarks/learning/utd/summary.json" in lines[2]
        assert "stage 1: 2 rounds x 4 local epochs, 3.50 MB per client per round" in lines[3]
        assert "one class-statistics round (6 clients merged, 0 rejected), 17.00 MB per client" in lines[3]
        assert lines[4] == "  results: /r/results.json; plot: /r/convergence.png"

    def test_reference__reads_the_sweep_report_rows(self, tmp_path: Path) -> None:
        # simulations/report.py rows name their finished seeds `seeds_done`
        repo = _reference(tmp_path, [{"method": "cosmo", "label_rate": 5.0, "seeds_done": [0, 1],
                                      "accuracy": [63.0, 2.5]}])
        assert "63.0 ± 2.5 % accuracy over 2 seeds" in centralized_reference("utd-mhad", 5, repo=repo)

    def test_reference__missing_rate_or_dataset_says_so(self, tmp_path: Path) -> None:
        repo = _reference(tmp_path, [{"method": "cosmo", "label_rate": 10.0, "seeds": [0], "accuracy": [70.0, 0.0]}])
        assert "no committed centralised cosmo result at 5 % labels" in centralized_reference("utd-mhad", 5, repo=repo)
        assert "no committed centralised reference for dataset 'synthetic'" in centralized_reference("synthetic", 5)
        assert "protocol 'odd-even'" in centralized_reference("utd-mhad", 5, repo=repo, protocol="odd-even")
        assert "unavailable" in centralized_reference("usc-had", 1, repo=tmp_path, protocol="default")


class TestPlot:
    def test_plot__writes_a_png_for_statistics_and_fedavg_stage_2(self, tmp_path: Path) -> None:
        fedavg = {"mode": "federated", "final": {"accuracy": 0.3, "macro_f1": 0.2},
                  "central": {"0": {"accuracy": 0.05}, "2": {"accuracy": 0.3}}}
        for name, stage2 in (("lda", LDA), ("fedavg", fedavg)):
            out = plot_convergence(_results(stage2), tmp_path / f"{name}.png")
            assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


class TestSummariseRuns:
    def test_summarise__mean_std_per_rate_and_mode_and_cli_files(self, tmp_path: Path) -> None:
        from simulations.run_summary import main

        paths = []
        for seed, acc in ((0, 0.6), (1, 0.7)):
            stage2 = {**LDA, "final": {"accuracy": acc, "macro_f1": acc - 0.1}}
            results = {**_results(stage2), "config": {**_results(stage2)["config"], "seed": seed}}
            paths.append(tmp_path / f"r{seed}.json")
            paths[-1].write_text(json.dumps(results))
        assert main(["--out", str(tmp_path / "out"), *map(str, paths)]) == 0
        summary = json.loads((tmp_path / "out" / "summary.json").read_text())
        (row,) = summary["rows"]
        assert (row["dataset"], row["label_rate"], row["stage2_mode"], row["seeds"]) == ("utd-mhad", 5.0, "lda", [0, 1])
        assert row["accuracy"][0] == 65.0 and abs(row["accuracy"][1] - 7.0711) < 1e-3
        assert row["stage1_rounds"] == [2]
        assert "| utd-mhad | 5 | lda | 2 | 65.0 ± 7.1 | 55.0 ± 7.1 | 60.0, 70.0 | 61 |" in (tmp_path / "out" / "table.md").read_text()
