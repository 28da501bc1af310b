"""simulations.deploy: credentials, secure-by-default command lines, and each pre-flight fault's clear error."""

from __future__ import annotations

import re
import socket
import ssl
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key

from fedhar.errors import DatasetNotFoundError, DeploymentError, ModalityMissingError
from simulations.deploy import (
    check_data_folder,
    check_reachable,
    check_tls,
    explain_supernode_failure,
    generate_tls,
)
from simulations.deploy.__main__ import EXIT_FAULT, EXIT_USAGE, main
from simulations.deploy.gateway import GatewaySpec, nginx_config

# What flower-supernode 1.41 logs when the SuperLink refuses an unregistered key (seen on loopback).
UNREGISTERED_LOG = ("ERROR :     Exit Code: 305\nFailed to initialize the connection to the SuperLink.\n"
                    "[code: 2004] Failed to activate SuperNode.\n")
BOUND_S = 3.0


def _listener() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


@pytest.fixture(scope="module")
def creds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("certs")
    generate_tls(["127.0.0.1"], out)
    return out


@pytest.fixture
def tls_server(creds: Path) -> Iterator[str]:
    """A TLS server on loopback presenting the generated server certificate (handshakes, then closes)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(creds / "server.pem", creds / "server.key")
    sock = _listener()
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            try:
                with context.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        sock.close()


class TestCredentials:
    def test_generate_tls__server_cert_names_loopback_and_verifies(self, creds: Path) -> None:
        cert = x509.load_pem_x509_certificate((creds / "server.pem").read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "localhost" in sans.get_values_for_type(x509.DNSName)
        assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} >= {"127.0.0.1"}
        assert stat.S_IMODE((creds / "server.key").stat().st_mode) == 0o600

    def test_generate_tls__refuses_to_overwrite(self, creds: Path) -> None:
        with pytest.raises(FileExistsError, match="--overwrite"):
            generate_tls(["127.0.0.1"], creds)

    def test_node_keys__ecdsa_p384_openssh(self, tmp_path: Path) -> None:
        assert main(["node-keys", "--names", "n1", "n2", "--out", str(tmp_path)]) == 0
        private = load_ssh_private_key((tmp_path / "n1").read_bytes(), password=None)
        public = load_ssh_public_key((tmp_path / "n1.pub").read_bytes())
        assert isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp384r1"
        assert public == private.public_key()
        assert (tmp_path / "n1.pub").read_text().startswith("ecdsa-sha2-nistp384 ")
        assert stat.S_IMODE((tmp_path / "n1").stat().st_mode) == 0o600

    def test_node_keys__bad_name_is_usage_error(self, tmp_path: Path) -> None:
        assert main(["node-keys", "--names", "../evil", "--out", str(tmp_path)]) == EXIT_USAGE


class TestCommandLines:
    def test_superlink__secure_by_default(self, creds: Path, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["superlink", "--certs", str(creds), "--port", "9999"]) == 0
        out = capsys.readouterr().out
        assert "--enable-supernode-auth" in out and "--ssl-certfile" in out and "--insecure" not in out

    def test_superlink__without_certs_or_insecure_is_refused(self) -> None:
        assert main(["superlink"]) == EXIT_USAGE

    def test_superlink__insecure_only_when_asked(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["superlink", "--insecure", "--no-node-auth"]) == 0
        assert "--insecure" in capsys.readouterr().out

    def test_supernode__names_subject_and_data(self, creds: Path, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["supernode", "--superlink", "10.0.0.5:8000", "--ca", str(creds / "ca.crt"), "--key", "k/n1",
                     "--subject-id", "3", "--data-path", "/data/utd"]) == 0
        out = capsys.readouterr().out
        assert "subject-id=3 data-path=\"/data/utd\"" in out and "--auth-supernode-private-key k/n1" in out

    def test_supernode__device_goes_into_node_config(self, creds: Path, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["supernode", "--superlink", "10.0.0.5:8000", "--ca", str(creds / "ca.crt"), "--key", "k/n1",
                     "--subject-id", "3", "--device", "cuda"]) == 0
        assert 'subject-id=3 device="cuda"' in capsys.readouterr().out

    def test_supernode__secure_needs_ca_and_key(self) -> None:
        assert main(["supernode", "--superlink", "127.0.0.1:8000", "--subject-id", "1"]) == EXIT_USAGE

    def test_connection__writes_flwr_config(self, creds: Path, tmp_path: Path) -> None:
        assert main(["connection", "--name", "edge", "--address", "127.0.0.1:8000", "--ca", str(creds / "ca.crt"),
                     "--flwr-home", str(tmp_path)]) == 0
        text = (tmp_path / "config.toml").read_text()
        assert "[superlink.edge]" in text and "root-certificates" in text


class TestGateway:
    def test_config__fleet_and_health_forwarded__everything_else_403(self, creds: Path, tmp_path: Path) -> None:
        text = nginx_config(GatewaySpec("0.0.0.0:8000", 8001, creds, max_body="16m"), tmp_path / "gw")
        assert "listen 0.0.0.0:8000 ssl;" in text and "client_max_body_size 16m;" in text
        forwarded = re.findall(r"location (=? ?\S+) \{ proxy_pass https://127\.0\.0\.1:8001;", text)
        assert forwarded == ["/v1/fleet/", "= /health"]
        assert "location / { return 403; }" in text and f"proxy_ssl_trusted_certificate {creds.resolve()}/ca.crt" in text

    def test_cli__prints_gateway_then_loopback_superlink(self, creds: Path, tmp_path: Path, nginx_cli: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
        gw = tmp_path / "gw"
        assert main(["superlink", "--certs", str(creds), "--gateway", "0.0.0.0:8000", "--port", "8001",
                     "--gateway-dir", str(gw)]) == 0
        nginx, link = capsys.readouterr().out.strip().splitlines()
        assert nginx.startswith(nginx_cli) and f"-c {gw.resolve()}/nginx.conf" in nginx
        assert "--host 127.0.0.1 --port 8001" in link and "--enable-supernode-auth" in link
        assert stat.S_IMODE(gw.stat().st_mode) == 0o700

    def test_cli__gateway_needs_tls_and_a_loopback_superlink(self, creds: Path, tmp_path: Path) -> None:
        gw = ["--gateway", "0.0.0.0:8000", "--gateway-dir", str(tmp_path / "gw")]
        assert main(["superlink", "--insecure", "--no-node-auth", *gw]) == EXIT_USAGE
        assert main(["superlink", "--certs", str(creds), "--host", "0.0.0.0", *gw]) == EXIT_USAGE

    def test_cli__gateway_port_taken__fault_before_the_superlink_starts(self, creds: Path, tmp_path: Path,
                                                                        nginx_cli: str) -> None:
        with _listener() as taken:
            port = taken.getsockname()[1]
            started = time.monotonic()
            assert main(["superlink", "--certs", str(creds), "--gateway", f"127.0.0.1:{port}", "--port", "1",
                         "--gateway-dir", str(tmp_path / "gw"), "--exec"]) == EXIT_FAULT
            assert time.monotonic() - started < 10  # the SuperLink (port 1) was never started

    def test_cli__unreadable_certificate__nginx_check_fails(self, tmp_path: Path, nginx_cli: str) -> None:
        (tmp_path / "certs").mkdir()  # no certificate files
        assert main(["superlink", "--certs", str(tmp_path / "certs"), "--gateway", "127.0.0.1:8000",
                     "--gateway-dir", str(tmp_path / "gw")]) == EXIT_FAULT


class TestPreflightFaults:
    def test_unreachable__clear_error_fast(self) -> None:
        with _listener() as sock:
            port = sock.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(DeploymentError, match="SuperLink unreachable"):
            check_reachable(f"127.0.0.1:{port}", timeout=BOUND_S)
        assert time.monotonic() - started < BOUND_S

    def test_silent_server__tls_times_out_bounded(self, creds: Path) -> None:
        with _listener() as sock:  # accepts TCP (backlog) but never answers the handshake
            started = time.monotonic()
            with pytest.raises(DeploymentError, match="timed out"):
                check_tls(f"127.0.0.1:{sock.getsockname()[1]}", creds / "ca.crt", timeout=1.0)
        assert time.monotonic() - started < BOUND_S

    def test_right_ca__passes(self, tls_server: str, creds: Path) -> None:
        check_tls(tls_server, creds / "ca.crt", timeout=BOUND_S)

    def test_wrong_ca__says_wrong_certificate(self, tls_server: str, tmp_path: Path) -> None:
        other = generate_tls(["127.0.0.1"], tmp_path)
        with pytest.raises(DeploymentError, match="wrong certificate"):
            check_tls(tls_server, other.ca_cert, timeout=BOUND_S)

    def test_cli_check__wrong_ca_exits_1(self, tls_server: str, tmp_path: Path) -> None:
        other = generate_tls(["127.0.0.1"], tmp_path)
        assert main(["check", "--superlink", tls_server, "--ca", str(other.ca_cert), "--timeout", "2"]) == EXIT_FAULT

    def test_plaintext_server__says_not_tls(self, creds: Path) -> None:
        with _listener() as sock:
            def answer_plain() -> None:
                conn, _ = sock.accept()
                with conn:
                    conn.recv(1024)
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            thread = threading.Thread(target=answer_plain, daemon=True)
            thread.start()
            with pytest.raises(DeploymentError, match="does not speak TLS"):
                check_tls(f"127.0.0.1:{sock.getsockname()[1]}", creds / "ca.crt", timeout=BOUND_S)
            thread.join(timeout=5)

    def test_unregistered_key__explained(self) -> None:
        err = explain_supernode_failure(1, UNREGISTERED_LOG, Path("keys/n3.pub"), "edge")
        assert err is not None and "not registered" in err.reason
        assert "flwr supernode register keys/n3.pub edge" in err.reason

    def test_data_folder__missing(self, tmp_path: Path) -> None:
        with pytest.raises(DatasetNotFoundError, match="does not exist"):
            check_data_folder(tmp_path / "nope", "utd-mhad", 1)

    def test_data_folder__empty(self, tmp_path: Path) -> None:
        with pytest.raises(DatasetNotFoundError, match="empty"):
            check_data_folder(tmp_path, "utd-mhad", 1)

    def test_data_folder__modality_missing(self, tmp_path: Path) -> None:
        (tmp_path / "Inertial").mkdir()
        (tmp_path / "Inertial" / "a1_s2_t1_inertial.mat").write_bytes(b"")
        with pytest.raises(ModalityMissingError, match="'skeleton' is missing on this device"):
            check_data_folder(tmp_path, "utd-mhad", 2)
        assert check_data_folder(tmp_path, "utd-mhad", 2, ["inertial"]) == {"inertial": 1}
        with pytest.raises(ModalityMissingError, match="subject 3"):
            check_data_folder(tmp_path, "utd-mhad", 3, ["inertial"])

    @pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a node without CUDA")
    def test_cli_check__cuda_without_gpu_is_usage_error(self, tls_server: str, creds: Path) -> None:
        assert main(["check", "--superlink", tls_server, "--ca", str(creds / "ca.crt"), "--device", "cuda"]) == EXIT_USAGE

    def test_cli_check__empty_data_folder_exits_1(self, tls_server: str, creds: Path, tmp_path: Path) -> None:
        assert main(["check", "--superlink", tls_server, "--ca", str(creds / "ca.crt"), "--dataset", "usc-had",
                     "--data-path", str(tmp_path)]) == EXIT_FAULT


def test_superlink_child__state_files_created_owner_only(tmp_path: Path) -> None:
    # What the SuperLink writes (state database, logs) under deploy's umask: 0600, not 0644.
    import sys

    from simulations.deploy.__main__ import STATE_UMASK, _run_child

    state = tmp_path / "state.db"
    code, _ = _run_child([sys.executable, "-c", f"open({str(state)!r}, 'w').write('nodes')"], umask=STATE_UMASK)
    assert code == 0 and stat.S_IMODE(state.stat().st_mode) == 0o600
