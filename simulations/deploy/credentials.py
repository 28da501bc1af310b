"""TLS and node-authentication credentials for a SuperLink and its SuperNodes (``cryptography`` only).

What Flower 1.41 expects (see ``flower-superlink --help`` / ``flower-supernode --help``):

- SuperLink: ``--ssl-ca-certfile ca.crt --ssl-certfile server.pem --ssl-keyfile server.key``
  (PEM); the server certificate must name the address the SuperNodes dial in its
  subject alternative names (SANs).
- SuperNode: ``--root-certificates ca.crt`` and ``--auth-supernode-private-key n1``: an
  ECDSA key on a NIST curve (P-384 here) in OpenSSH format; its ``n1.pub`` is registered
  on the SuperLink with ``flwr supernode register n1.pub <connection>``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["ServerCredentials", "generate_node_keys", "generate_tls", "sans_for"]

logger = logging.getLogger(__name__)

#: Names every server certificate carries, so that loopback tests and a local SuperExec work.
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
#: Validity of the generated CA and server certificate.
VALIDITY_DAYS = 825
#: NIST P-384: the curve Flower's examples and key checks use for node keys.
NODE_KEY_CURVE = ec.SECP384R1
PRIVATE_MODE = 0o600
CA_FILE, SERVER_CERT_FILE, SERVER_KEY_FILE, CA_KEY_FILE = "ca.crt", "server.pem", "server.key", "ca.key"


@dataclass(frozen=True)
class ServerCredentials:
    """Paths of the files :func:`generate_tls` wrote.

    Parameters
    ----------
    ca_cert
        The CA certificate: copy it to every SuperNode (``--root-certificates``) and to
        the machine running ``flwr`` (``root-certificates`` in its ``config.toml``).
    ca_key
        The CA's private key: keep it offline; needed only to issue new server certificates.
    server_cert
        The SuperLink's certificate (``--ssl-certfile``).
    server_key
        The SuperLink's private key (``--ssl-keyfile``); never leaves the server.
    """

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


def sans_for(hosts: Iterable[str]) -> list[x509.GeneralName]:
    """Subject alternative names: IP addresses as ``IPAddress``, anything else as ``DNSName``."""
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys([*hosts, *LOOPBACK_NAMES]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def generate_tls(hosts: Sequence[str], out: Path, *, overwrite: bool = False) -> ServerCredentials:
    """Write a self-signed CA and a server certificate for ``hosts`` (plus loopback names) to ``out``.

    Parameters
    ----------
    hosts
        Names or IP addresses the SuperNodes use to reach the SuperLink.
    out
        Folder to write ``ca.crt``, ``ca.key``, ``server.pem``, ``server.key`` into.
    overwrite
        Replace existing files (otherwise refuse, so that a deployed CA is not lost).

    Raises
    ------
    FileExistsError
        If a file would be replaced and ``overwrite`` is false.
    """
    paths = ServerCredentials(out / CA_FILE, out / CA_KEY_FILE, out / SERVER_CERT_FILE, out / SERVER_KEY_FILE)
    _refuse_overwrite([paths.ca_cert, paths.ca_key, paths.server_cert, paths.server_key], overwrite)
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    not_before, not_after = now - dt.timedelta(minutes=5), now + dt.timedelta(days=VALIDITY_DAYS)

    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedhar deployment CA")])
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0] if hosts else "localhost")]))
        .issuer_name(ca_name).public_key(server_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(sans_for(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    _write(paths.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM))
    _write(paths.server_cert, server_cert.public_bytes(serialization.Encoding.PEM))
    _write(paths.ca_key, _pem_private(ca_key), private=True)
    _write(paths.server_key, _pem_private(server_key), private=True)
    logger.info("wrote CA and server certificate for %s to %s", ", ".join([*hosts, *LOOPBACK_NAMES]), out)
    return paths


def generate_node_keys(names: Sequence[str], out: Path, *, overwrite: bool = False) -> dict[str, tuple[Path, Path]]:
    """Write one ECDSA P-384 key pair per SuperNode, OpenSSH format: ``<name>`` and ``<name>.pub``.

    Parameters
    ----------
    names
        SuperNode names (file stems), e.g. ``["subject-1", "subject-2"]``.
    out
        Folder to write the keys into.
    overwrite
        Replace existing files (otherwise refuse: a registered key must not change silently).

    Returns
    -------
    dict
        Name -> (private key path, public key path).

    Raises
    ------
    ValueError
        If a name is empty or not a plain file name.
    FileExistsError
        If a key file exists and ``overwrite`` is false.
    """
    for name in names:
        if not name or Path(name).name != name or name.startswith("."):
            raise ValueError(f"node name {name!r} must be a plain file name, e.g. 'subject-1'")
    pairs = {n: (out / n, out / f"{n}.pub") for n in names}
    _refuse_overwrite([p for pair in pairs.values() for p in pair], overwrite)
    out.mkdir(parents=True, exist_ok=True)
    for name, (private_path, public_path) in pairs.items():
        key = ec.generate_private_key(NODE_KEY_CURVE())
        private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                    serialization.NoEncryption())
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        _write(private_path, private, private=True)
        _write(public_path, public + f" fedhar-{name}\n".encode())
    logger.info("wrote %d SuperNode key pair(s) to %s", len(pairs), out)
    return pairs


def _pem_private(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _refuse_overwrite(paths: Iterable[Path], overwrite: bool) -> None:
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"refusing to replace {existing}; pass --overwrite to regenerate (re-distribute "
                              "the CA / re-register the keys afterwards)")


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    """Write ``data``; private keys are created with mode 0600 (never world-readable, not even briefly)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(path, flags, PRIVATE_MODE if private else 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    if private:
        path.chmod(PRIVATE_MODE)
