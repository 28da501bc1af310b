"""SuperLink + device gateway + two SuperNodes on 127.0.0.1 with TLS and node authentication: a real federated
run through the gateway, and refusals (unregistered key, plaintext, a device at the Control API).

Every process is started in its own session and stopped by its PID (process group) in a
``finally``; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fedhar.errors import DeploymentError
from simulations.deploy import (
    SuperNodeSpec,
    check_tls,
    explain_supernode_failure,
    generate_node_keys,
    generate_tls,
    superlink_command,
    supernode_command,
    write_connection,
)
from simulations.deploy.gateway import GatewaySpec, check_config, gateway_command, write_config

REPO = Path(__file__).resolve().parents[2]
CONNECTION = "edge-test"
#: The same CA certificate, dialling the gateway: what an enrolled device can do with it.
DEVICE_CONNECTION = "edge-device"
# Two training subjects (1, 2), subject 3 held out; one round per stage, tiny model and budget.
OVERRIDES = ("dataset=synthetic dataset.preprocess.num_subjects=3 dataset.preprocess.num_classes=3 "
             "dataset.preprocess.samples_per_subject_class=8 dataset.protocols.default.test_subjects=[3] "
             "label_rate=50 model=compact federation=smoke federation.stage1_rounds=1 federation.stage2_rounds=1 "
             "federation.stage2_local_epochs=2 federation.client_eval=false budget=tiny stage2.t_iter=2 "
             "privacy.min_merged_subjects=2 privacy.secure_aggregation.enabled=true")
#: Largest request body the test's gateway passes (the compact model's objects are far smaller).
GATEWAY_MAX_BODY = "8m"
STARTUP_TIMEOUT_S = 90.0
REFUSAL_TIMEOUT_S = 90.0
RUN_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 15.0
POLL_S = 3.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Processes:
    """Processes this test started; :meth:`stop_all` ends each one's process group by its PID."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs, self.started = env, logs, []  # type: list[subprocess.Popen[bytes]]

    def start(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("wb")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=REPO,
                                start_new_session=True)
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        # SuperExec starts its ServerApp/ClientApp processes in a session of their own: collect every
        # descendant PID first (they are re-parented to init once their parent exits), stop them by PID.
        descendants = [pid for proc in self.started for pid in _descendants(proc.pid)]
        for proc in reversed(self.started):
            _stop_group(proc.pid)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                _stop_group(proc.pid, signal.SIGKILL)
                proc.wait(timeout=STOP_TIMEOUT_S)
        for pid in descendants:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


def _descendants(root: int) -> list[int]:
    """PIDs of every live descendant of ``root`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat_file.parent.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _stop_group(pid: int, sig: signal.Signals = signal.SIGTERM) -> None:
    """Signal the process group led by ``pid`` (the SuperLink/SuperNode and the SuperExec it spawned)."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def _wait_for_tls(address: str, ca: Path, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            pytest.fail(f"SuperLink exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            check_tls(address, ca, timeout=2.0)
            return
        except DeploymentError:
            if time.monotonic() > deadline:
                pytest.fail(f"SuperLink did not come up within {STARTUP_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)


def _run(procs: _Processes, name: str, cmd: list[str], timeout: float) -> tuple[int, str]:
    """Run ``cmd`` to its end (bounded); output goes to a file, since SuperExec children inherit pipes."""
    proc = procs.start(name, cmd)
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop_group(proc.pid, signal.SIGKILL)
        pytest.fail(f"{name} did not finish within {timeout} s:\n{(procs.logs / f'{name}.log').read_text()[-3000:]}")
    _stop_group(proc.pid)  # a SuperExec it spawned may outlive it
    return code, (procs.logs / f"{name}.log").read_text()


def _wait_for_run(procs: _Processes, run_id: str, deadline: float) -> str:
    """Poll `flwr ls` until run ``run_id`` is finished (or ``deadline``); return its status."""
    status = "unknown"
    while time.monotonic() < deadline:
        code, out = _run(procs, "flwr-ls", ["flwr", "ls", CONNECTION, "--format", "json"], 60)
        try:
            runs = json.loads(out[out.index("{"):]).get("runs", []) if code == 0 else []
        except ValueError:
            runs = []
        status = next((str(r.get("status")) for r in runs if str(r.get("run-id")) == run_id), status)
        if status.startswith("finished"):
            return status
        time.sleep(POLL_S)
    return f"{status} (timed out)"


@pytest.fixture
def deployment(tmp_path: Path, nginx_cli: str) -> Iterator[tuple[_Processes, Path, str, str]]:
    """Credentials, a private FLWR_HOME, a TLS + node-auth SuperLink on a free loopback port and its device gateway."""
    env = {**os.environ, "FLWR_HOME": str(tmp_path / "flwr-home"), "FEDHAR_OUTPUT_DIR": str(tmp_path / "runs"),
           "FEDHAR_CACHE_DIR": str(tmp_path / "cache"), "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
           # Both sides start `flower-superexec` by name: the venv's bin must be on PATH.
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    (tmp_path / "logs").mkdir()
    procs = _Processes(env, tmp_path / "logs")
    creds = generate_tls(["127.0.0.1"], tmp_path / "certs")
    generate_node_keys(["n1", "n2", "rogue"], tmp_path / "keys")
    address = f"127.0.0.1:{_free_port()}"
    gateway = f"127.0.0.1:{_free_port()}"
    write_connection(CONNECTION, address, ca_cert=creds.ca_cert, flwr_home=tmp_path / "flwr-home")
    write_connection(DEVICE_CONNECTION, gateway, ca_cert=creds.ca_cert, flwr_home=tmp_path / "flwr-home")
    config = write_config(GatewaySpec(gateway, int(address.split(":")[1]), tmp_path / "certs", max_body=GATEWAY_MAX_BODY),
                          tmp_path / "gateway")
    check_config(config, tmp_path / "gateway")
    try:
        link = procs.start("superlink", superlink_command(certs=tmp_path / "certs", port=int(address.split(":")[1]),
                                                          database=tmp_path / "state.db"))
        _wait_for_tls(address, creds.ca_cert, link, tmp_path / "logs" / "superlink.log")
        nginx = procs.start("gateway", gateway_command(config, tmp_path / "gateway"))
        _wait_for_tls(gateway, creds.ca_cert, nginx, tmp_path / "gateway" / "error.log")
        yield procs, tmp_path, address, gateway
    finally:
        procs.stop_all()


def _node(tmp_path: Path, address: str, key: str, subject: int, **kwargs: object) -> list[str]:
    return supernode_command(SuperNodeSpec(address, subject, data_path=tmp_path / f"device-{subject}",
                                           ca_cert=tmp_path / "certs" / "ca.crt", private_key=tmp_path / "keys" / key,
                                           port=_free_port(), **kwargs))  # type: ignore[arg-type]


@pytest.mark.slow
def test_superlink_tls_auth__federated_run_through_gateway_and_refusals(
    deployment: tuple[_Processes, Path, str, str],
) -> None:
    procs, tmp_path, address, gateway = deployment
    # A device holding ca.crt dials the gateway: every Control and runtime API call is refused there
    # (register a node key, start a run, list runs and nodes, read logs), before any device is enrolled.
    for name, cmd in (("device-register", ["flwr", "supernode", "register", str(tmp_path / "keys" / "rogue.pub"),
                                           DEVICE_CONNECTION]),
                      ("device-run", ["flwr", "run", ".", DEVICE_CONNECTION]),
                      ("device-ls", ["flwr", "ls", DEVICE_CONNECTION]),
                      ("device-nodes", ["flwr", "supernode", "list", DEVICE_CONNECTION]),
                      ("device-log", ["flwr", "log", "1", DEVICE_CONNECTION])):
        code, out = _run(procs, name, cmd, 60)
        assert code != 0 and "403" in out, (name, out[-2000:])
    tls = ssl.create_default_context(cafile=tmp_path / "certs" / "ca.crt")
    for path in ("/v1/control/register-node", "/v1/control/stream-logs", "/v1/control/start-run",
                 "/v1/runtime/acquire-task", "/docs"):
        assert httpx.post(f"https://{gateway}{path}", verify=tls, timeout=10).status_code == 403, path
    assert httpx.get(f"https://{gateway}/health", verify=tls, timeout=10).status_code == 200
    # An oversized reply object is refused by the gateway before the SuperLink reads it.
    oversized = httpx.post(f"https://{gateway}/v1/fleet/push-object", content=b"\0" * (9 << 20), verify=tls, timeout=30)
    assert oversized.status_code == 413

    # Register the two devices' public keys against the running SuperLink.
    for name in ("n1", "n2"):
        code, out = _run(procs, f"register-{name}", ["flwr", "supernode", "register",
                                                       str(tmp_path / "keys" / f"{name}.pub"), CONNECTION], 60)
        assert code == 0 and "registered successfully" in out, out

    # An unregistered key is refused, with our explanation of the fault.
    code, out = _run(procs, "rogue", _node(tmp_path, address, "rogue", 1, max_retries=1, max_wait_time=10),
                     REFUSAL_TIMEOUT_S)
    assert code != 0
    err = explain_supernode_failure(code, out, tmp_path / "keys" / "rogue.pub", CONNECTION)
    assert err is not None and "not registered" in err.reason and "flwr supernode register" in err.reason

    # A plaintext client is refused by the TLS server.
    code, out = _run(procs, "plaintext", ["flower-supernode", "--insecure", "--superlink", address, "--port",
                                          str(_free_port()), "--node-config", "subject-id=1", "--max-retries", "1",
                                          "--max-wait-time", "10"], REFUSAL_TIMEOUT_S)
    assert code != 0 and "Exit Code: 305" in out, out

    # Two registered devices, one subject each, through the gateway; then stage 1 + stage 2 on synthetic data.
    for name, subject in (("n1", 1), ("n2", 2)):
        (tmp_path / f"device-{subject}").mkdir()
        procs.start(f"supernode-{name}", _node(tmp_path, gateway, name, subject))
    started = time.monotonic()
    code, out = _run(procs, "flwr-run", ["flwr", "run", ".", CONNECTION, "--run-config",
                                         f'hydra-overrides="{OVERRIDES}"'], 120)
    run_ids = re.findall(r"Successfully started run (\d+)", out)
    assert code == 0 and run_ids, out
    # `flwr run --stream` may end before the run does (the log stream closes): poll the run's status instead.
    status = _wait_for_run(procs, run_ids[0], started + RUN_TIMEOUT_S)
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted((tmp_path / "logs").glob("*.log")))
    assert status == "finished:completed", f"run {run_ids[0]}: {status}\n{logs}"
    results_file = tmp_path / "runs" / run_ids[0] / "results.json"
    assert results_file.is_file(), logs
    results = json.loads(results_file.read_text())
    assert results["train_subjects"] == [1, 2] and results["test_subjects"] == [3]
    assert set(results["stage1"]["rounds"]) == {"1"}
    # Both devices took part, through secure aggregation over TLS and the gateway: the server got sums only.
    assert results["stage1"]["secure_aggregation"]["1"]["num_summed"] == 2
    assert results["stage1"]["client_weights"] == {}
    assert results["stage2"]["class_stats"]["subjects"] == [1, 2]
    assert 0.0 <= results["final"]["accuracy"] <= 1.0
    # The devices' Fleet traffic went through the gateway.
    access = (tmp_path / "gateway" / "access.log").read_text()
    assert "POST /v1/fleet/pull-messages HTTP/1.1\" 200" in access and "/v1/fleet/push-messages" in access
    print(f"deployed run: {time.monotonic() - started:.0f} s")
