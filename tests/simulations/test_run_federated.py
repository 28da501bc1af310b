"""run_federated: exit codes with a fake `flwr`, and real `flwr run` end to end on synthetic data."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from dp_reference import reference_epsilon

from fedhar.data.config import DatasetConfig
from fedhar.data.experiment import prepare_experiment
from fedhar.data.loading import load_dataset
from fedhar.data.normalization import Normalizer
from simulations import export_model, infer, local_superlink, run_federated
from simulations.run_federated import EXIT_FAILED, EXIT_NO_RESULTS, EXIT_TIMEOUT, check_run, free_port

REPO = Path(__file__).resolve().parents[2]


def _fake_flwr(bin_dir: Path, run_lines: list[str], status: str, code: int = 0) -> None:
    """A `flwr` on PATH: `flwr run` prints ``run_lines`` and exits ``code``; `flwr ls` reports ``status``."""
    listing = json.dumps({"success": True, "runs": [{"run-id": "42", "status": status}]})
    script = bin_dir / "flwr"
    script.write_text(
        f"#!{sys.executable}\nimport sys\n"
        f"if sys.argv[1] == 'ls':\n    print({listing!r})\n    sys.exit(0)\n"
        f"print({chr(10).join(run_lines)!r})\nsys.exit({code})\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


def _fake_superlink(bin_dir: Path, pids: Path) -> None:
    """A `flower-superlink` on PATH: answers /health on its --port and starts a child in a session of
    its own (standing in for SuperExec and the simulation); both PIDs are appended to ``pids``."""
    script = bin_dir / "flower-superlink"
    script.write_text(
        f"#!{sys.executable}\nimport http.server, os, subprocess, sys\n"
        "port = int(sys.argv[sys.argv.index('--port') + 1])\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], start_new_session=True)\n"
        f"open({str(pids)!r}, 'a').write(f'{{os.getpid()}} {{child.pid}}\\n')\n"
        "class Health(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n        self.send_response(200)\n        self.end_headers()\n"
        "    def log_message(self, *args):\n        pass\n"
        "http.server.HTTPServer(('127.0.0.1', port), Health).serve_forever()\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


def _gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie waiting for its parent counts as exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _count_runs(flwr: Path, calls: Path) -> None:
    """Make the fake `flwr` append its first argument to ``calls`` on every invocation."""
    text = flwr.read_text().replace("import sys\n", f"import sys\nopen({str(calls)!r}, 'a').write(sys.argv[1] + chr(10))\n", 1)
    flwr.write_text(text)


class TestRunFederatedExitCodes:
    @pytest.fixture
    def fake_path(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.setenv("FEDHAR_OUTPUT_DIR", str(tmp_path / "runs"))
        monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr-home"))
        monkeypatch.setenv("FLWR_LOCAL_SUPERLINK_HTTP_API_PORT", str(free_port()))
        _fake_superlink(bin_dir, tmp_path / "superlink-pids")
        return bin_dir

    @staticmethod
    def _superlinks(tmp_path: Path) -> list[tuple[int, int]]:
        """(SuperLink PID, its child's PID) of every fake SuperLink started so far."""
        text = (tmp_path / "superlink-pids").read_text() if (tmp_path / "superlink-pids").exists() else ""
        return [(int(a), int(b)) for a, b in (line.split() for line in text.splitlines())]

    @staticmethod
    def _results(tmp_path: Path, run: str = "42") -> Path:
        """The results file a ServerApp of run ``run`` writes under FEDHAR_OUTPUT_DIR."""
        path = tmp_path / "runs" / run / "results.json"
        path.parent.mkdir(parents=True)
        path.write_text("{}")
        return path

    def test_main__completed_with_results_exits_0(self, fake_path: Path, tmp_path: Path) -> None:
        self._results(tmp_path)
        _fake_flwr(fake_path, ["Successfully started run 42"], "finished:completed")
        assert run_federated.main(["."]) == 0

    def test_main__results_of_another_run_do_not_count(self, fake_path: Path, tmp_path: Path) -> None:
        # The results path follows from the run id, not from any path the log mentions.
        other = self._results(tmp_path, "41")
        _fake_flwr(fake_path, ["Successfully started run 42", f"results: {other}"], "finished:completed")
        assert run_federated.main(["."]) == EXIT_NO_RESULTS

    def test_main__resumed_run__results_in_the_resumed_folder(self, fake_path: Path, tmp_path: Path) -> None:
        self._results(tmp_path, "7")
        _fake_flwr(fake_path, ["Successfully started run 42"], "finished:completed")
        assert run_federated.main([".", "--resume", "7"]) == 0

    def test_main__bad_run_config__refused_before_any_run(self, fake_path: Path, tmp_path: Path) -> None:
        _fake_flwr(fake_path, ["Successfully started run 42"], "finished:completed")
        calls = tmp_path / "calls"
        _count_runs(fake_path / "flwr", calls)
        with pytest.raises(SystemExit) as exit_info:
            run_federated.main([".", "--run-config", "seed=-3"])
        assert exit_info.value.code == 2 and not calls.exists()

    def test_main__failed_status_exits_nonzero_even_if_flwr_exits_0(self, fake_path: Path, tmp_path: Path) -> None:
        self._results(tmp_path)
        _fake_flwr(fake_path, ["Successfully started run 42"], "finished:failed")
        assert run_federated.main(["."]) == EXIT_FAILED

    def test_main__missing_results_exits_nonzero(self, fake_path: Path, tmp_path: Path) -> None:
        _fake_flwr(fake_path, ["Successfully started run 42"], "finished:completed")
        assert run_federated.main(["."]) == EXIT_NO_RESULTS

    def test_main__flwr_error_exits_nonzero(self, fake_path: Path) -> None:
        _fake_flwr(fake_path, ["boom"], "finished:completed", code=3)
        assert run_federated.main(["."]) == EXIT_FAILED

    def test_main__failed_without_results__relaunched_then_fails(self, fake_path: Path, tmp_path: Path) -> None:
        # Prepare: a run that always ends finished:failed with no results (a lost task heartbeat)
        _fake_flwr(fake_path, ["Successfully started run 42"], "finished:failed")
        calls = tmp_path / "calls"
        _count_runs(fake_path / "flwr", calls)
        # Execute / Assert: one launch plus the one retry asked for, still a failure
        assert run_federated.main([".", "--retries", "1"]) == EXIT_FAILED
        assert calls.read_text().count("run") == 2

    def test_main__silent_run_killed_at_timeout(self, fake_path: Path) -> None:
        # Prepare: `flwr run` prints one line, then hangs silently, with a child holding the pipe
        script = fake_path / "flwr"
        script.write_text(f"#!{sys.executable}\nimport subprocess, sys, time\nprint('Successfully started run 42', "
                          f"flush=True)\nsubprocess.Popen(['sleep', '30'])\ntime.sleep(60)\n")
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
        # Execute
        started = time.perf_counter()
        code = run_federated.main([".", "--timeout", "2"])
        # Assert: bounded (the timeout plus the reader's grace), reported as a timeout
        assert code == EXIT_TIMEOUT
        assert time.perf_counter() - started < 2 + run_federated.READER_GRACE_S + 5

    def test_main__failure__single_launch_by_default_and_one_closing_line(
        self, fake_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture
    ) -> None:
        # A failure costs one run, not two, and the last line names the ServerApp's error.
        error = "fedhar.errors.FederationError: stage 1: all 2 rounds failed; round 1: 0 valid replies of 2 received"
        _fake_flwr(fake_path, ["Successfully started run 42", "Traceback (most recent call last):", error,
                               "RuntimeError: a client's streamed traceback after the server's error"],
                   "finished:failed")
        calls = tmp_path / "calls"
        _count_runs(fake_path / "flwr", calls)
        assert run_federated.main(["."]) == EXIT_FAILED
        assert calls.read_text().count("run") == 1
        last = capsys.readouterr().out.strip().splitlines()[-1]
        assert last == ("fedhar run 42 failed: FederationError: stage 1: all 2 rounds failed; round 1: 0 valid "
                        "replies of 2 received")

    def test_main__starts_a_superlink_and_stops_it_with_its_tree(self, fake_path: Path, tmp_path: Path) -> None:
        # The SuperLink of the run and the process it started in a session of its own are gone after it.
        self._results(tmp_path)
        _fake_flwr(fake_path, ["Successfully started run 42"], "finished:completed")
        assert run_federated.main(["."]) == 0
        (link, child), = self._superlinks(tmp_path)
        assert _gone(link) and _gone(child)

    def test_main__lost_task__a_fresh_superlink_per_attempt(self, fake_path: Path, tmp_path: Path) -> None:
        # A retry never shares a SuperLink with the lost attempt's leftovers: two started, both stopped.
        _fake_flwr(fake_path, ["Successfully started run 42"], "finished:failed")
        assert run_federated.main([".", "--retries", "1"]) == EXIT_FAILED
        started = self._superlinks(tmp_path)
        assert len(started) == 2 and all(_gone(pid) for pair in started for pid in pair)

    def test_main__timeout__superlink_tree_stopped(self, fake_path: Path, tmp_path: Path) -> None:
        script = fake_path / "flwr"
        script.write_text(f"#!{sys.executable}\nimport time\nprint('Successfully started run 42', flush=True)\n"
                          f"time.sleep(60)\n")
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
        assert run_federated.main([".", "--timeout", "2"]) == EXIT_TIMEOUT
        (link, child), = self._superlinks(tmp_path)
        assert _gone(link) and _gone(child)

    def test_main__killed__stops_flwr_run_and_the_superlink_tree(self, fake_path: Path, tmp_path: Path) -> None:
        # `kill <pid>` of the launcher (SIGTERM) must not leave the SuperLink and its simulation running.
        script = fake_path / "flwr"
        script.write_text(f"#!{sys.executable}\nimport os, time\nopen({str(tmp_path / 'flwr-pid')!r}, 'w')"
                          f".write(str(os.getpid()))\nprint('Successfully started run 42', flush=True)\ntime.sleep(60)\n")
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
        proc = subprocess.Popen([sys.executable, "-m", "simulations.run_federated", "."], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not (tmp_path / "flwr-pid").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert (tmp_path / "flwr-pid").exists(), "flwr run was never started"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
        (link, child), = self._superlinks(tmp_path)
        assert _gone(link) and _gone(child) and _gone(int((tmp_path / "flwr-pid").read_text()))

    def test_main__superlink_already_running__used_and_left_alone(self, fake_path: Path, tmp_path: Path) -> None:
        # Prepare: a SuperLink this command did not start answers on the port
        env = dict(os.environ)
        other = local_superlink.start(env)
        try:
            self._results(tmp_path)
            _fake_flwr(fake_path, ["Successfully started run 42"], "finished:completed")
            # Execute / Assert: the run used it (no second one started) and it still runs
            assert run_federated.main(["."]) == 0
            assert len(self._superlinks(tmp_path)) == 1 and other.poll() is None and local_superlink.is_running(env)
        finally:
            assert local_superlink.stop(other) == 2

    def test_main__flwr_cli_refusal__its_error_box_in_the_closing_line(
            self, fake_path: Path, capsys: pytest.CaptureFixture) -> None:
        _fake_flwr(fake_path, ["Using SuperLink: local (127.0.0.1:39812)",
                               "╭─ Error ──────────────────────────────╮",
                               "│ 'float' object cannot be interpreted │",
                               "│ as an integer                        │",
                               "╰──────────────────────────────────────╯"], "finished:completed", code=1)
        assert run_federated.main(["."]) == EXIT_FAILED
        last = capsys.readouterr().out.strip().splitlines()[-1]
        assert last == "fedhar run (none started) failed: flwr: 'float' object cannot be interpreted as an integer"

    def test_main__superlink_that_exits__one_closing_line(self, fake_path: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
        broken = fake_path / "flower-superlink"
        broken.write_text(f"#!{sys.executable}\nimport sys\nsys.exit(3)\n")
        _fake_flwr(fake_path, ["Successfully started run 42"], "finished:completed")
        assert run_federated.main(["."]) == EXIT_FAILED
        last = capsys.readouterr().out.strip().splitlines()[-1]
        assert last.startswith("fedhar run (none started) failed: SuperLinkError: flower-superlink exited with code 3")

    def test_check_run__results_path_from_run_id_and_output_dir(self, tmp_path: Path) -> None:
        config = {"hydra-overrides": f"paths.output_dir={tmp_path / 'out'}"}
        outcome = check_run(["x", "Successfully started run 7"], run_federated.output_root(config), config,
                            lambda rid: "s")
        assert (outcome.run_id, outcome.status, outcome.results) == (7, "s", tmp_path / "out" / "7" / "results.json")


# Two clients (subjects 1, 2), subject 3 held out, tiny model and budget.
SMOKE = ("dataset=synthetic dataset.preprocess.num_subjects=3 dataset.protocols.default.test_subjects=[3] "
         "label_rate=50 model=compact federation=smoke federation.stage2_rounds=4 federation.stage2_local_epochs=4 "
         "budget=tiny stage2.t_iter=2 stage2.optim.lr=0.003 "
         # Two training subjects: each could read the other's statistics off the merged ones (docs/privacy.md).
         "privacy.min_merged_subjects=2")
RESULT_KEYS = {"run_id", "config", "train_subjects", "test_subjects", "normalization", "stage1", "qom_prior", "stage2",
               "final", "final_model", "wall_time_s", "phases_s", "server_started_unix", "server_finished_unix"}
SERVER_PHASES = ["setup", "wait_for_nodes", "normalisation_round", "stage1", "stage2"]


def _flwr_run(tmp_path: Path, overrides: str, capsys: pytest.CaptureFixture, extra_env: dict[str, str] | None = None,
              federation: str = "num-supernodes=2 client-resources-num-cpus=1", typed: str = "",
              expect: int = 0, resume: str | None = None) -> dict:
    # A private FLWR_HOME and private ports: never join (and run the code of) another SuperLink.
    env = {"FLWR_HOME": str(tmp_path / "flwr-home"), "FEDHAR_OUTPUT_DIR": str(tmp_path / "runs"),
           "FEDHAR_CACHE_DIR": str(tmp_path / "cache"), "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
           "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(free_port()), "FLWR_LOCAL_CONTROL_API_PORT": str(free_port()), **(extra_env or {})}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    cwd = os.getcwd()
    try:
        os.chdir(REPO)
        typed_config = ["--run-config", typed] if typed else []
        typed_config += ["--resume", resume] if resume else []
        code = run_federated.main([".", "--run-config", f'hydra-overrides="{overrides}"', *typed_config,
                                   "--federation-config", federation, "--timeout", "900"])
    finally:  # run_federated stopped the SuperLink it started
        os.chdir(cwd)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    out = capsys.readouterr().out
    assert code == expect, out[-3000:]
    if expect:
        return {"closing_line": out.strip().splitlines()[-1]}
    assert "on held-out subjects" in out and "convergence.png" in out  # the closing summary
    path = re.findall(r"results: (\S+results\.json)", out)[-1]  # the closing summary's
    assert Path(path).parent.parent == tmp_path / "runs"
    return json.loads(Path(path).read_text())


def _assert_end_to_end(results: dict, runs: Path) -> None:
    """What every complete run of SMOKE must show: the files, the subjects, learning, weights, the phases."""
    assert RESULT_KEYS <= set(results)
    assert (runs / str(results["run_id"]) / "convergence.png").stat().st_size > 10_000
    assert results["train_subjects"] == [1, 2] and results["test_subjects"] == [3]
    num_classes = results["config"]["dataset"]["preprocess"]["num_classes"]
    assert results["final"]["accuracy"] > 1.0 / num_classes
    assert set(results["stage1"]["rounds"]) == {"1", "2"}
    assert results["stage1"]["rounds"]["1"]["num-rejected"] == 0
    assert set(results["stage1"]["client_weights"]["1"]["imu"]) == {"subject-1", "subject-2"}
    assert results["qom_prior"]["imu"] > results["qom_prior"]["noise"]  # the noise modality is uninformative
    # The server's phases, in order, cover its main(): they add up to its wall time.
    phases = results["phases_s"]
    assert list(phases) == SERVER_PHASES and min(phases.values()) >= 0.0
    assert sum(phases.values()) == pytest.approx(results["wall_time_s"], abs=1.0)
    assert results["server_finished_unix"] - results["server_started_unix"] == pytest.approx(results["wall_time_s"], abs=1.0)


@pytest.mark.slow
def test_flwr_run__normalisation_round_dp_then_export(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # The simulation runs the deployment path: the clients read only their own subject and send
    # their moments and class counts; the server merges them before stage 1. Every aggregation
    # (2 stage-1 and 4 federated stage-2 rounds) is differentially private and accounted.
    results = _flwr_run(tmp_path, f"{SMOKE} federation.stage2_mode=federated privacy.dp.enabled=true "
                                  "privacy.dp.noise_multiplier=0.02 privacy.dp.clip_norm=1.0", capsys)
    run_dir = tmp_path / "runs" / str(results["run_id"])
    dp = results["privacy"]["dp"]
    assert dp["num_releases"] == 6 and [r["stage"] for r in dp["releases"]] == ["pretrain"] * 2 + ["finetune"] * 4
    assert all(r["clients"] == 2 for r in dp["releases"])  # every client's reply valid in every round
    assert dp["releases"][0]["epsilon"] == pytest.approx(reference_epsilon(0.02, 1, dp["delta"]), rel=1e-6)
    assert dp["noise_std"] == pytest.approx(0.02 * 2 * 1.0 / dp["min_total_weight"]) and dp["min_total_weight"] == 1.0
    assert dp["epsilon"] == pytest.approx(reference_epsilon(0.02, 6, dp["delta"]), rel=1e-6)
    norm = results["normalization"]
    assert norm["subjects"] == [1, 2] and norm["num_rejected"] == 0 and results["final_model"]
    # The merged statistics equal the centralised fit on the same training subjects.
    cfg = DatasetConfig.from_mapping(results["config"]["dataset"])
    dataset = load_dataset(cfg)
    central = prepare_experiment(dataset, cfg, results["config"]["label_rate"], results["config"]["seed"])
    merged = Normalizer.load(run_dir / norm["file"]).stats
    for name, mom in central.normalizer.stats.moments.items():
        assert merged.moments[name].count == mom.count
        np.testing.assert_allclose(merged.mean(name), central.normalizer.stats.mean(name), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(merged.std(name), central.normalizer.stats.std(name), rtol=1e-10)
    assert norm["class_counts"]["1"] == np.bincount(dataset.labels[dataset.subjects == 1]).tolist()
    # The final stage-2 model exports, matches PyTorch, and infer reproduces the run's test accuracy on raw windows.
    windows = tmp_path / "test-windows.npz"
    assert export_model.main(["--run-dir", str(run_dir), "--windows", str(windows)]) == 0
    report = json.loads((run_dir / "export" / "export.json").read_text())
    assert report["passed"] and report["pytorch_accuracy"] == pytest.approx(results["final"]["accuracy"])
    capsys.readouterr()
    assert infer.main(["--model", str(run_dir / "export" / "model.onnx"), "--data", str(windows)]) == 0
    predicted = np.array([int(line.split()[1]) for line in capsys.readouterr().out.splitlines()])
    assert np.mean(predicted == np.load(windows)["labels"]) == pytest.approx(results["final"]["accuracy"])


@pytest.mark.slow
def test_flwr_run__secure_aggregation_sums_only(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # Every QoMFedAvg round (2 in stage 1, 4 federated in stage 2) runs SecAgg+: the clients mask
    # their weighted updates; the server sums and unmasks, and never holds one client's update.
    results = _flwr_run(tmp_path, f"{SMOKE} federation.stage2_mode=federated federation.stage2_compare=[lda] "
                                  "privacy.secure_aggregation.enabled=true", capsys)
    assert results["privacy"]["secure_aggregation"]["enabled"] is True
    # The normalisation moments too: a census in the clear, the sums through SecAgg+.
    norm = results["normalization"]
    assert norm["secure_sum"] is True and norm["num_merged"] == 2 and norm["num_rejected"] == 0
    assert sorted(norm["stats"]) == ["imu", "noise"]
    assert all(m["count"] > 0 and min(m["sum_sq"]) > 0 for m in norm["stats"].values())
    stage1, stage2 = results["stage1"]["secure_aggregation"], results["stage2"]["secure_aggregation"]
    assert sorted(stage1) == ["1", "2"] and sorted(stage2) == ["1", "2", "3", "4"]
    for record in [*stage1.values(), *stage2.values()]:
        assert record["num_summed"] == 2 and record["dropped"] == {} and "failed" not in record
        assert record["weight_sums"]["shared"] > 0.5  # n_k / n_max of both subjects
    assert results["stage1"]["client_weights"] == {}  # the server never learnt a client's weight
    assert results["stage1"]["rounds"]["2"]["num-aggregated"] == 2
    assert results["stage1"]["failed_rounds"] == {} and results["stage2"]["failed_rounds"] == {}
    assert 0.0 <= results["final"]["accuracy"] <= 1.0 and results["qom_prior"]
    # The lda head from class statistics summed by the same protocol: the server got only their sum.
    lda = results["stage2_compare"]["lda"]
    assert lda["class_stats"]["num_merged"] == 2 and lda["class_stats"]["num_rejected"] == 0
    assert sum(lda["class_stats"]["rows_per_class"]) > 0 and lda["final"]["accuracy"] > 0.0


@pytest.mark.slow
def test_flwr_run__dp_with_secure_aggregation(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # Both switches: each client clips its own update before masking it, the server noises the unmasked sum
    # and accounts every release (2 stage-1 and 4 federated stage-2 rounds), never holding one update.
    results = _flwr_run(tmp_path, f"{SMOKE} federation.stage2_mode=federated privacy.secure_aggregation.enabled=true "
                                  "privacy.dp.enabled=true privacy.dp.noise_multiplier=0.02 privacy.dp.clip_norm=1.0",
                        capsys)
    dp = results["privacy"]["dp"]
    assert dp["num_releases"] == 6 and all(r["clients"] == 2 for r in dp["releases"])
    assert all(r["clipping"] == "client-side (secure aggregation)" for r in dp["releases"])
    assert dp["epsilon"] == pytest.approx(reference_epsilon(0.02, 6, dp["delta"]), rel=1e-6)
    stage1, stage2 = results["stage1"]["secure_aggregation"], results["stage2"]["secure_aggregation"]
    assert sorted(stage1) == ["1", "2"] and sorted(stage2) == ["1", "2", "3", "4"]
    assert all(r["num_summed"] == 2 and "failed" not in r for r in [*stage1.values(), *stage2.values()])
    assert results["stage1"]["client_weights"] == {} and results["stage1"]["failed_rounds"] == {}
    assert 0.0 <= results["final"]["accuracy"] <= 1.0


@pytest.mark.slow
def test_flwr_run__heterogeneous_modalities(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # Subject 1 only has the informative sensor; subject 2 has both.
    results = _flwr_run(tmp_path, f"{SMOKE} +dataset.modality_subsets={{1:[imu]}} "
                                  "federation.class_stats.personalise=true", capsys)
    rnd = results["stage1"]["rounds"]["1"]
    assert rnd["num-rejected"] == 0 and rnd["num-aggregated"] == 2
    weights = results["stage1"]["client_weights"]["1"]
    assert "subject-1" not in weights["noise"] and weights["noise"]["subject-2"] == 1.0
    assert 0 < weights["imu"]["subject-1"] < 1
    # Stage 2 (lda): both subjects' class statistics accepted; subject 1 sends zeros in the noise slot.
    assert results["stage2"]["mode"] == "lda" and results["stage2"]["class_stats"]["subjects"] == [1, 2]
    assert results["stage2"]["class_stats"]["num_rejected"] == 0
    # Personalised lda heads: each client's own held-out rows with the global and its personal
    # head, and each personal head on the test subject.
    personal = results["stage2"]["personalised"]
    assert set(personal["clients"]) == {"subject-1", "subject-2"} and personal["num_rejected"] == 0
    for client in personal["clients"].values():
        assert {"own_accuracy_global", "own_accuracy_personal", "test_accuracy_personal"} <= set(client)
        assert client["test_accuracy_global"] == results["final"]["accuracy"]


@pytest.mark.slow
def test_flwr_run__same_seed_same_weights_resume_and_every_stage2_mode(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # Same seed, full participation: bit-identical stage-1 and stage-2 weights, also when the
    # server was killed after stage-1 round 1 and the run resumed; another seed gives other
    # weights. The first run also runs every other stage-2 mode from the same encoders (after
    # the primary mode, lda).
    first = _flwr_run(tmp_path / "a", f"{SMOKE} federation.stage2_compare=[local,centralized,federated,ccvr]", capsys)
    _assert_end_to_end(first, tmp_path / "a" / "runs")
    killed = _flwr_run(tmp_path / "b", f"{SMOKE} federation.inject_server_crash_after_round=1", capsys,
                       expect=EXIT_FAILED)["closing_line"]
    assert "injected server crash after stage-1 round 1" in killed
    run_id = killed.split()[2]
    run_dir = tmp_path / "b" / "runs" / run_id
    assert json.loads((run_dir / "run.json").read_text())["status"] == "incomplete"
    assert (run_dir / "stage1-round001.pt").is_file() and not (run_dir / "stage1-round002.pt").exists()
    second = _flwr_run(tmp_path / "b", "", capsys, resume=run_id)
    assert second["run_id"] == int(run_id) and second["stage1"]["resumed_after_round"] == 1
    assert set(second["stage1"]["rounds"]) == {"1", "2"}  # round 1 from before the crash, round 2 after
    _assert_end_to_end(second, tmp_path / "b" / "runs")
    assert json.loads((run_dir / "run.json").read_text())["status"] == "complete"
    # The seed as a typed run-config key (flwr run --run-config "seed=1").
    other_seed = _flwr_run(tmp_path / "c", SMOKE, capsys, typed="seed=1")
    assert first["stage1"]["weights_sha256"] == second["stage1"]["weights_sha256"]
    assert first["stage2"]["weights_sha256"] == second["stage2"]["weights_sha256"]
    # ... and the seed matters: equal digests above are not a digest that ignores the weights.
    assert other_seed["config"]["seed"] == 1
    assert other_seed["stage1"]["weights_sha256"] != first["stage1"]["weights_sha256"]
    assert other_seed["stage2"]["weights_sha256"] != first["stage2"]["weights_sha256"]
    assert first["final"] == second["final"]
    local, central = first["stage2_compare"]["local"], first["stage2_compare"]["centralized"]
    assert set(local["clients"]) == {"subject-1", "subject-2"} and set(local["mean"]) >= {"accuracy", "own_accuracy"}
    assert central["num_labeled"] > 0 and 0.0 <= central["final"]["accuracy"] <= 1.0
    fedavg, ccvr = first["stage2_compare"]["federated"], first["stage2_compare"]["ccvr"]
    assert set(fedavg["rounds"]) == {"1", "2", "3", "4"} and ccvr["class_stats"]["num_merged"] == 2
    # The class-statistics heads are fitted from every labeled row: (1 + passes) x the labeled count.
    passes = first["stage2"]["class_stats"]["passes"]
    assert passes == first["config"]["federation"]["class_stats"]["passes"] > 0  # stage 2 augments (recipe fedhar)
    assert sum(first["stage2"]["class_stats"]["rows_per_class"]) == (1 + passes) * central["num_labeled"]
    assert second["stage2_compare"] == {}


@pytest.mark.slow
def test_flwr_run__every_stage1_round_failing__exits_nonzero_naming_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # Every client raises in every training round: the run must not go on to stage 2 with
    # untrained encoders and report success; one closing line says which stage and why.
    out = _flwr_run(tmp_path, f"{SMOKE} federation.inject_failures.fraction=1.0", capsys, expect=EXIT_FAILED)
    line = out["closing_line"]
    assert line.startswith("fedhar run ") and "failed: FederationError: stage 1: all 2 rounds failed" in line
    assert "0 valid replies of 2 received" in line and "injected failure (subject" in line and len(line) < 500


RAY_START_TIMEOUT_S = 120.0


@pytest.mark.slow
def test_flwr_run__joins_existing_ray_cluster(tmp_path: Path, capsys: pytest.CaptureFixture, ray_cli: str) -> None:
    # `ray start --head --num-cpus 2`, then the unchanged app (no init-args-num-cpus) joins it.
    # The head gets a private port and temp dir (other simulations on the machine do not
    # join it), runs with --block in its own process group and is always terminated.
    port = free_port()
    temp_dir = Path(tempfile.mkdtemp(prefix="fedhar-ray-", dir="/tmp"))  # short: Ray's socket paths
    head = subprocess.Popen([ray_cli, "start", "--head", "--num-cpus", "2", "--port", str(port), "--block",
                             "--node-ip-address", "127.0.0.1", "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp_dir}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + RAY_START_TIMEOUT_S
        while not any(temp_dir.glob("session_*/logs/gcs_server.out")) and time.monotonic() < deadline:
            assert head.poll() is None, "ray start --head exited early"
            time.sleep(1.0)
        time.sleep(3.0)
        logs = temp_dir / "session_latest" / "logs"
        assert not list(logs.glob("python-core-driver-*")), "a driver joined the head before the run"
        results = _flwr_run(tmp_path, SMOKE, capsys, extra_env={"RAY_ADDRESS": f"127.0.0.1:{port}"})
        assert results["final"]["accuracy"] > 0.0
        # The run's simulation driver connected to this head (python-core-driver-<driver id>_<pid>.log,
        # the driver id starting with its 8-hex-digit job id) and the head's workers ran that job's
        # actors (worker-<worker id>-<job id>-<pid>.out). Workers the head prestarts carry job
        # ffffffff; a run on its own local Ray logs into another temp dir.
        names = sorted(p.name for p in logs.iterdir())
        driver_jobs = {m.group(1) for n in names
                       if (m := re.fullmatch(r"python-core-driver-([0-9a-f]{8})[0-9a-f]*_\d+\.log", n))}
        worker_jobs = {m.group(1) for n in names if (m := re.fullmatch(r"worker-[0-9a-f]+-([0-9a-f]{8})-\d+\.out", n))}
        assert driver_jobs, f"no driver log in {logs}: the run did not join the cluster ({names})"
        assert driver_jobs & worker_jobs, f"no worker of the driver's job {driver_jobs} on the head ({names})"
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)
