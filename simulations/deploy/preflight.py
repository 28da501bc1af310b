"""Pre-flight checks for a SuperNode: each deployment fault becomes one clear, bounded-time error.

Faults covered: SuperLink unreachable (TCP connect with a timeout), wrong certificate
(TLS handshake against the CA the node holds), server not speaking TLS, node key not
registered (recognised in the SuperNode's exit and explained), data folder missing or
empty, a modality missing on the device.
"""

from __future__ import annotations

import logging
import re
import socket
import ssl
from collections.abc import Sequence
from pathlib import Path

from fedhar.errors import DatasetNotFoundError, DeploymentError, ModalityMissingError

__all__ = [
    "check_data_folder",
    "check_reachable",
    "check_tls",
    "explain_supernode_failure",
    "split_address",
]

logger = logging.getLogger(__name__)

#: Seconds a TCP connect or TLS handshake may take before the check gives up.
DEFAULT_TIMEOUT_S = 5.0
#: flower-supernode's exit code when it cannot initialise its connection (flwr ExitCode.SUPERNODE_CONNECTION_ERROR).
SUPERNODE_CONNECTION_ERROR = 305
#: flower-supernode's exit code for an unreadable / wrong-type node key (ExitCode.SUPERNODE_NODE_AUTH_KEY_INVALID).
SUPERNODE_NODE_AUTH_KEY_INVALID = 302
# flower-supernode exits with status 1 and logs "Exit Code: <n>" (flwr 1.41).
_EXIT_CODE = re.compile(r"Exit Code: (\d+)")
# What the SuperLink answers a node whose key is not registered while --enable-supernode-auth is on:
# HTTP 412, Flower API error 2004 FLEET_NODE_ACTIVATION_FAILED ("Failed to activate SuperNode.").
_UNREGISTERED = re.compile(r"code: 2004|Failed to activate SuperNode|not registered", re.IGNORECASE)
_TLS_FAILURE = re.compile(r"certificate|ssl|tls", re.IGNORECASE)

# Per dataset: modality -> (sub-folder, file pattern of one subject's files, {subject} filled in).
_MODALITY_FILES: dict[str, dict[str, tuple[str, str]]] = {
    "utd-mhad": {"inertial": ("Inertial", "a*_s{subject}_t*_inertial.mat"),
                 "skeleton": ("Skeleton", "a*_s{subject}_t*_skeleton.mat")},
    # USC-HAD stores acc and gyro in the same file (sensor_readings columns 0-2 / 3-5).
    "usc-had": {"acc": ("Subject{subject}", "a*t*.mat"), "gyro": ("Subject{subject}", "a*t*.mat")},
}


def split_address(address: str) -> tuple[str, int]:
    """``"host:port"`` (or ``"[v6]:port"``) -> ``(host, port)``.

    Raises
    ------
    ValueError
        If there is no port or it is not an integer in 1..65535.
    """
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 2**16:
        raise ValueError(f"address {address!r} must be host:port, e.g. 192.168.1.10:8000")
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout: float = DEFAULT_TIMEOUT_S) -> None:
    """Open (and close) a TCP connection to the SuperLink, waiting at most ``timeout`` seconds.

    Raises
    ------
    DeploymentError
        If the connection is refused, times out, or the name does not resolve.
    """
    host, port = split_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except socket.gaierror as err:
        raise DeploymentError(f"cannot resolve SuperLink host {host!r} ({err}); check the --superlink address "
                              "or the device's DNS / /etc/hosts", address) from err
    except TimeoutError as err:
        raise DeploymentError(f"SuperLink unreachable: no answer within {timeout:g} s; check the address, that "
                              "the server is up, and that a firewall does not drop the port", address) from err
    except OSError as err:
        raise DeploymentError(f"SuperLink unreachable: {err.strerror or err}; is flower-superlink running and "
                              f"listening on port {port} (--host/--port)?", address) from err
    logger.info("SuperLink %s is reachable", address)


def check_tls(address: str, ca_cert: Path, timeout: float = DEFAULT_TIMEOUT_S) -> None:
    """TLS handshake with the SuperLink, verifying its certificate against ``ca_cert`` and its host name.

    Raises
    ------
    DeploymentError
        If ``ca_cert`` is unreadable, the certificate is not signed by that CA or does not
        name the host, the server does not speak TLS, or the handshake times out.
    """
    host, port = split_address(address)
    try:
        context = ssl.create_default_context(cafile=str(ca_cert))
    except (OSError, ssl.SSLError) as err:
        raise DeploymentError(f"cannot read the CA certificate ({err}); copy the SuperLink's ca.crt to the device",
                              ca_cert) from err
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, context.wrap_socket(
                raw, server_hostname=host):
            pass
    except ssl.SSLCertVerificationError as err:
        raise DeploymentError(
            f"wrong certificate: the SuperLink at {address} presented a certificate that {ca_cert} does not "
            f"verify ({err.verify_message}). Use the ca.crt generated with the server's certificate "
            f"(`python -m simulations.deploy certs --host {host} ...`), and make sure it names {host}", address,
        ) from err
    except ssl.SSLError as err:
        raise DeploymentError(f"TLS handshake with {address} failed ({err.reason or err}); if the SuperLink was "
                              "started with --insecure it does not speak TLS: start it with certificates",
                              address) from err
    except TimeoutError as err:
        raise DeploymentError(f"TLS handshake with {address} timed out after {timeout:g} s", address) from err
    except OSError as err:
        raise DeploymentError(f"SuperLink unreachable: {err.strerror or err}", address) from err
    logger.info("SuperLink %s presented a certificate signed by %s", address, ca_cert)


def check_data_folder(path: Path, dataset: str, subject: int | None = None,
                      modalities: Sequence[str] | None = None) -> dict[str, int]:
    """Check that a device's data folder exists, is not empty, and holds every expected modality.

    Parameters
    ----------
    path
        The node config's ``data-path``.
    dataset
        Dataset name (``utd-mhad``, ``usc-had``; ``synthetic`` needs no folder).
    subject
        The node config's ``subject-id``; if given, count only that subject's files.
    modalities
        Modalities this device must have (default: all of the dataset's).

    Returns
    -------
    dict
        Modality -> number of files found.

    Raises
    ------
    DatasetNotFoundError
        If the folder is missing, not a folder, or empty.
    ModalityMissingError
        If an expected modality has no file (for this subject).
    ValueError
        If ``dataset`` or a modality is unknown.
    """
    if dataset == "synthetic":
        return {}
    if dataset not in _MODALITY_FILES:
        raise ValueError(f"unknown dataset {dataset!r}; known: {sorted(_MODALITY_FILES)} or 'synthetic'")
    if not path.exists():
        raise DatasetNotFoundError(f"data folder does not exist; set the node config data-path to the folder "
                                   f"holding this device's {dataset} files", path)
    if not path.is_dir():
        raise DatasetNotFoundError("data-path is not a folder", path)
    if not any(path.iterdir()):
        raise DatasetNotFoundError(f"data folder is empty; copy this device's {dataset} files into it", path)
    layout = _MODALITY_FILES[dataset]
    wanted = list(modalities) if modalities else list(layout)
    unknown = sorted(set(wanted) - set(layout))
    if unknown:
        raise ValueError(f"unknown modalities {unknown} for {dataset}; known: {list(layout)}")
    subject_glob = "*" if subject is None else str(subject)
    counts: dict[str, int] = {}
    for modality in wanted:
        folder, pattern = layout[modality]
        where = path / folder.format(subject=subject_glob)
        counts[modality] = sum(1 for _ in path.glob(f"{folder}/{pattern}".format(subject=subject_glob)))
        if not counts[modality]:
            who = "any subject" if subject is None else f"subject {subject}"
            raise ModalityMissingError(
                f"modality {modality!r} is missing on this device: no {pattern.format(subject=subject_glob)} for "
                f"{who} under {where}. Copy its files, or declare the device's modalities in "
                f"dataset.modality_subsets so that the run does not expect it", path)
    logger.info("data folder %s: %s", path, counts)
    return counts


def explain_supernode_failure(exit_code: int, log_tail: str, public_key: Path | None = None,
                              connection: str = "<connection>") -> DeploymentError | None:
    """Turn a failed ``flower-supernode`` exit into a :class:`DeploymentError` with the fix, if recognised.

    ``exit_code`` is the process status; the Flower exit code logged as ``Exit Code: <n>``
    in ``log_tail`` takes precedence (flwr 1.41 exits with 1 and logs the real code).
    """
    logged = _EXIT_CODE.findall(log_tail)
    exit_code = int(logged[-1]) if logged else exit_code
    if exit_code == SUPERNODE_NODE_AUTH_KEY_INVALID:
        return DeploymentError("the node's private key is unreadable or not an ECDSA key in OpenSSH format; "
                               "generate one with `python -m simulations.deploy node-keys`", public_key)
    if exit_code != SUPERNODE_CONNECTION_ERROR:
        return None
    if _UNREGISTERED.search(log_tail):
        pub = public_key or "<node>.pub"
        return DeploymentError(
            f"node key not registered: the SuperLink runs with --enable-supernode-auth and refused this node's key. "
            f"On a machine with a SuperLink connection run `flwr supernode register {pub} {connection}`, then "
            "restart the SuperNode", public_key)
    if "Server disconnected without sending a response" in log_tail:
        return DeploymentError("the SuperLink closed the connection without an answer: a plaintext (--insecure) "
                               "SuperNode talking to a TLS SuperLink? Pass --root-certificates instead")
    if _TLS_FAILURE.search(log_tail):
        return DeploymentError("TLS failed between SuperNode and SuperLink; check --root-certificates against "
                               "the server's CA (`python -m simulations.deploy check ...`)")
    return DeploymentError("the SuperNode could not connect to the SuperLink (server down, wrong address or "
                           "port, or retries exhausted); run `python -m simulations.deploy check ...`")
