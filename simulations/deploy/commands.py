"""Command lines for flower-superlink / flower-supernode (secure by default) and the flwr connection entry."""

from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from fedhar import keys
from simulations.deploy.credentials import CA_FILE, SERVER_CERT_FILE, SERVER_KEY_FILE

__all__ = ["SuperNodeSpec", "format_node_config", "superlink_command", "supernode_command",
           "write_connection"]

logger = logging.getLogger(__name__)

#: Flower's default SuperLink HTTP port (Fleet, Control and ServerAppIo share it since 1.40).
DEFAULT_SUPERLINK_PORT = 8000
#: flower-supernode's default port for its local ClientAppIo API; two nodes on one host need two ports.
DEFAULT_SUPERNODE_PORT = 9094
LOOPBACK = "127.0.0.1"


def superlink_command(*, certs: Path | None, host: str = LOOPBACK, port: int = DEFAULT_SUPERLINK_PORT,
                      database: Path | None = None, insecure: bool = False, node_auth: bool = True,
                      log_file: Path | None = None) -> list[str]:
    """``flower-superlink`` argv: TLS from ``certs`` (``ca.crt``, ``server.pem``, ``server.key``) and node auth.

    Runtime dependency installation (``uv sync`` of the app's dependencies on the server)
    is disabled: the app and its pinned torch are installed beforehand.

    Raises
    ------
    ValueError
        If neither ``certs`` nor ``insecure`` is given, or node auth is asked for without TLS.
    """
    cmd = ["flower-superlink", "--host", host, "--port", str(port), "--disable-runtime-dependency-installation"]
    if insecure:
        if node_auth:
            raise ValueError("node authentication needs TLS; drop --insecure or pass --no-node-auth")
        logger.warning("starting the SuperLink WITHOUT TLS: traffic, model weights included, is readable on the "
                       "network; use this on loopback only")
        cmd.append("--insecure")
    else:
        if certs is None:
            raise ValueError("a SuperLink needs --certs DIR (from `certs`), or an explicit --insecure")
        cmd += ["--ssl-ca-certfile", str(certs / CA_FILE), "--ssl-certfile", str(certs / SERVER_CERT_FILE),
                "--ssl-keyfile", str(certs / SERVER_KEY_FILE)]
        if node_auth:
            cmd.append("--enable-supernode-auth")
    if database is not None:
        cmd += ["--database", str(database)]
    if log_file is not None:
        cmd += ["--log-file", str(log_file)]
    return cmd


@dataclass(frozen=True)
class SuperNodeSpec:
    """One device: where the SuperLink is, its credentials, and which subject / data it holds.

    Parameters
    ----------
    superlink
        ``host:port`` of the SuperLink's HTTP API.
    subject_id
        The subject this device plays (node config ``subject-id``).
    data_path
        The device's data folder (node config ``data-path``); ``None`` for synthetic data.
    ca_cert
        The SuperLink's CA certificate (``--root-certificates``); ``None`` only with ``insecure``.
    private_key
        The node's ECDSA private key (``--auth-supernode-private-key``).
    port
        Local ClientAppIo port; distinct per node on one host.
    insecure
        Plain HTTP (loopback tests only).
    max_retries, max_wait_time
        Bound on reconnection attempts / seconds (``None``: Flower retries forever, right
        for a service; set them for checks and tests).
    extra_node_config
        More node-config keys (TOML values).
    """

    superlink: str
    subject_id: int
    data_path: Path | None = None
    ca_cert: Path | None = None
    private_key: Path | None = None
    port: int = DEFAULT_SUPERNODE_PORT
    insecure: bool = False
    max_retries: int | None = None
    max_wait_time: float | None = None
    extra_node_config: Mapping[str, str | int | float | bool] | None = None


def format_node_config(values: Mapping[str, str | int | float | bool]) -> str:
    """Space-separated ``key=value`` pairs with TOML values (``--node-config``)."""
    parts = []
    for key, value in values.items():
        text = tomli_w.dumps({"v": value}).split("=", 1)[1].strip()
        parts.append(f"{key}={text}")
    return " ".join(parts)


def supernode_command(spec: SuperNodeSpec) -> list[str]:
    """``flower-supernode`` argv for ``spec`` (TLS and node authentication unless ``spec.insecure``).

    Raises
    ------
    ValueError
        If a secure node lacks its CA certificate or private key.
    """
    node_config: dict[str, str | int | float | bool] = {keys.SUBJECT_ID: spec.subject_id}
    if spec.data_path is not None:
        node_config[keys.DATA_PATH] = str(spec.data_path)
    node_config.update(spec.extra_node_config or {})
    cmd = ["flower-supernode", "--superlink", spec.superlink, "--port", str(spec.port),
           "--node-config", format_node_config(node_config)]
    if spec.insecure:
        logger.warning("starting a SuperNode WITHOUT TLS and without node authentication; loopback tests only")
        cmd.append("--insecure")
    else:
        if spec.ca_cert is None or spec.private_key is None:
            raise ValueError("a secure SuperNode needs --ca (the SuperLink's ca.crt) and --key (its private key "
                             "from `node-keys`); or pass an explicit --insecure")
        cmd += ["--root-certificates", str(spec.ca_cert), "--auth-supernode-private-key", str(spec.private_key)]
    if spec.max_retries is not None:
        cmd += ["--max-retries", str(spec.max_retries)]
    if spec.max_wait_time is not None:
        cmd += ["--max-wait-time", str(spec.max_wait_time)]
    return cmd


def write_connection(name: str, address: str, *, ca_cert: Path | None, insecure: bool = False,
                     flwr_home: Path | None = None) -> Path:
    """Add or replace ``[superlink.<name>]`` in ``$FLWR_HOME/config.toml`` (for ``flwr run . <name>``).

    Raises
    ------
    ValueError
        If neither ``ca_cert`` nor ``insecure`` is given.
    """
    if ca_cert is None and not insecure:
        raise ValueError("a connection needs the SuperLink's CA certificate (--ca), or an explicit --insecure")
    home = flwr_home or Path(os.environ.get("FLWR_HOME", Path.home() / ".flwr"))
    path = home / "config.toml"
    config = tomllib.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    entry: dict[str, str | bool] = {"address": address}
    if insecure:
        entry["insecure"] = True
    else:
        entry["root-certificates"] = str(Path(ca_cert).resolve())  # type: ignore[arg-type]
    config.setdefault("superlink", {})[name] = entry
    home.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps(config), encoding="utf-8")
    logger.info("connection %r -> %s written to %s", name, address, path)
    return path
