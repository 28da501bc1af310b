"""``python -m simulations.deploy``: credentials, secure SuperLink / SuperNode command lines, pre-flight checks.

Examples (loopback)::

    python -m simulations.deploy certs --host 127.0.0.1 --out deploy/certs
    python -m simulations.deploy node-keys --names subject-1 subject-2 --out deploy/keys
    python -m simulations.deploy superlink --certs deploy/certs --port 8000 --database deploy/state.db --exec
    # on a network: devices reach the Fleet API only, through nginx on 0.0.0.0:8000; the
    # SuperLink (and its Control API, for operators on this host) on 127.0.0.1:8001
    python -m simulations.deploy superlink --certs deploy/certs --gateway 0.0.0.0:8000 --port 8001 \\
        --database deploy/state.db --exec
    python -m simulations.deploy connection --name edge --address 127.0.0.1:8000 --ca deploy/certs/ca.crt
    flwr supernode register deploy/keys/subject-1.pub edge
    python -m simulations.deploy supernode --superlink 127.0.0.1:8000 --ca deploy/certs/ca.crt \\
        --key deploy/keys/subject-1 --subject-id 1 --dataset utd-mhad --data-path /data/utd --exec
    python -m simulations.deploy check --superlink 127.0.0.1:8000 --ca deploy/certs/ca.crt

Without ``--exec`` the superlink / supernode subcommands print the command line. TLS and
node authentication are on unless ``--insecure`` is given. Exit codes: 0 ok, 1 a
deployment fault (explained on stderr), 2 bad usage; with ``--exec`` the server's own code.
"""

from __future__ import annotations

import argparse
import collections
import logging
import shlex
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from fedhar import keys
from fedhar.errors import DeploymentError, FedharError
from fedhar.train.device import resolve_device
from simulations.deploy.commands import (
    DEFAULT_SUPERLINK_PORT,
    DEFAULT_SUPERNODE_PORT,
    LOOPBACK,
    SuperNodeSpec,
    superlink_command,
    supernode_command,
    write_connection,
)
from simulations.deploy.credentials import generate_node_keys, generate_tls
from simulations.deploy.gateway import GatewaySpec, check_config, gateway_command, write_config
from simulations.deploy.preflight import (
    DEFAULT_TIMEOUT_S,
    check_data_folder,
    check_reachable,
    check_tls,
    explain_supernode_failure,
)

logger = logging.getLogger("simulations.deploy")

EXIT_FAULT = 1
EXIT_USAGE = 2
#: Seconds a gateway that fails to start needs to exit (nginx retries a taken port 5 times, 0.5 s apart).
GATEWAY_START_S = 5.0
#: Lines of a child's output kept to explain its failure.
LOG_TAIL_LINES = 200


#: The SuperLink runs under this umask: its state database and logs are created 0600.
STATE_UMASK = 0o077
STATE_FILE_MODE = 0o600


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m simulations.deploy", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("certs", help="CA + server certificate/key for the SuperLink's host names")
    p.add_argument("--host", nargs="+", required=True, help="names/IPs nodes dial (127.0.0.1, localhost always added)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--overwrite", action="store_true")

    p = sub.add_parser("node-keys", help="ECDSA P-384 OpenSSH key pairs, one per SuperNode")
    p.add_argument("--names", nargs="+", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--overwrite", action="store_true")

    p = sub.add_parser("superlink", help="print (or --exec) flower-superlink with TLS + node authentication")
    p.add_argument("--certs", type=Path, help="folder from `certs`")
    p.add_argument("--host", default=LOOPBACK, help="address to listen on (0.0.0.0 for remote devices)")
    p.add_argument("--port", type=int, default=DEFAULT_SUPERLINK_PORT)
    p.add_argument("--database", type=Path, help="state file (registered nodes persist across restarts)")
    p.add_argument("--log-file", type=Path)
    p.add_argument("--insecure", action="store_true", help="plain HTTP (loopback tests only)")
    p.add_argument("--no-node-auth", action="store_true", help="accept any node (not recommended)")
    p.add_argument("--gateway", metavar="HOST:PORT",
                   help="devices dial this address through an nginx gateway that passes the Fleet API only; the "
                        "SuperLink then listens on 127.0.0.1:--port, where operators reach its Control API")
    p.add_argument("--gateway-dir", type=Path, default=Path("gateway"),
                   help="folder for the gateway's nginx.conf and logs (default: ./gateway)")
    p.add_argument("--max-body", default="64m", help="largest request body the gateway accepts (nginx size)")
    p.add_argument("--exec", action="store_true", help="run it instead of printing it")

    p = sub.add_parser("supernode", help="print (or --exec, after pre-flight checks) flower-supernode for a device")
    _add_node_args(p)
    p.add_argument("--key", type=Path, help="this node's private key (from `node-keys`)")
    p.add_argument("--port", type=int, default=DEFAULT_SUPERNODE_PORT, help="local ClientAppIo port")
    p.add_argument("--insecure", action="store_true", help="plain HTTP, no node authentication (loopback tests)")
    p.add_argument("--max-retries", type=int, help="give up after this many reconnection attempts")
    p.add_argument("--max-wait-time", type=float, help="give up after this many seconds without a connection")
    p.add_argument("--connection", default="<connection>", help="connection name used in hints")
    p.add_argument("--exec", action="store_true", help="check, then run it instead of printing it")

    p = sub.add_parser("check", help="pre-flight checks only: reachable, TLS against the CA, data folder")
    _add_node_args(p)
    p.add_argument("--insecure", action="store_true", help="skip the TLS check")

    p = sub.add_parser("connection", help="write [superlink.NAME] into $FLWR_HOME/config.toml for `flwr run . NAME`")
    p.add_argument("--name", required=True)
    p.add_argument("--address", required=True, help="host:port of the SuperLink")
    p.add_argument("--ca", type=Path, help="the SuperLink's ca.crt")
    p.add_argument("--insecure", action="store_true")
    p.add_argument("--flwr-home", type=Path)
    return parser


def _add_node_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--superlink", required=True, help="host:port of the SuperLink")
    p.add_argument("--ca", type=Path, help="the SuperLink's ca.crt")
    p.add_argument("--subject-id", type=int, help="node config subject-id")
    p.add_argument("--data-path", type=Path, help="node config data-path (the device's data folder)")
    p.add_argument("--dataset", default="synthetic", help="utd-mhad, usc-had or synthetic (for the data check)")
    p.add_argument("--modalities", nargs="+", help="modalities this device must have (default: all)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per network check")
    p.add_argument("--device", help="node config device: the torch device this node trains on "
                   "(cpu, cuda, cuda:N, auto; default: the ClientApp's cpu)")


def _preflight(args: argparse.Namespace) -> None:
    check_reachable(args.superlink, args.timeout)
    if not args.insecure:
        if args.ca is None:
            raise ValueError("--ca is required for the TLS check (or pass --insecure)")
        check_tls(args.superlink, args.ca, args.timeout)
    if args.data_path is not None:
        check_data_folder(args.data_path, args.dataset, args.subject_id, args.modalities)
    if args.device is not None:
        resolve_device(args.device)  # a node asked for CUDA it lacks fails here, not in its first round


def _run_child(cmd: list[str], umask: int = -1) -> tuple[int, str]:
    """Run ``cmd`` (under ``umask`` unless -1), echo its output, forward SIGTERM/SIGINT; return (exit code, last lines)."""
    tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, umask=umask) as proc:
        def forward(signum: int, _frame: FrameType | None) -> None:
            proc.send_signal(signum)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, forward)
        for line in proc.stdout or ():
            sys.stdout.write(line)
            sys.stdout.flush()
            tail.append(line)
        return proc.wait(), "".join(tail)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "certs":
            creds = generate_tls(args.host, args.out, overwrite=args.overwrite)
            sys.stdout.write(f"SuperLink: {creds.server_cert} {creds.server_key}; copy {creds.ca_cert} to every "
                             f"device and to the flwr CLI machine; keep {creds.ca_key} offline\n")
        elif args.command == "node-keys":
            for name, (_, pub) in generate_node_keys(args.names, args.out, overwrite=args.overwrite).items():
                sys.stdout.write(f"{name}: register with `flwr supernode register {pub} <connection>`\n")
        elif args.command == "superlink":
            gateway = _gateway(args)
            cmd = superlink_command(certs=args.certs, host=args.host, port=args.port, database=args.database,
                                    insecure=args.insecure, node_auth=not args.no_node_auth, log_file=args.log_file)
            if not args.exec:
                if gateway is not None:
                    sys.stdout.write(shlex.join(gateway) + "\n")
                sys.stdout.write(shlex.join(cmd) + "\n")
                return 0
            # The state file and logs hold every node's key and every run's log: owner only.
            for path in (args.database, args.log_file):
                if path is not None and Path(path).exists():
                    Path(path).chmod(STATE_FILE_MODE)
            if gateway is None:
                return _run_child(cmd, umask=STATE_UMASK)[0]
            with subprocess.Popen(gateway, umask=STATE_UMASK) as nginx:
                try:  # a gateway that cannot bind exits at once
                    code: int | None = nginx.wait(timeout=GATEWAY_START_S)
                except subprocess.TimeoutExpired:
                    code = None
                if code is not None:
                    raise DeploymentError(f"the nginx gateway exited with code {code} (address in use?); "
                                          f"see {args.gateway_dir / 'error.log'}", args.gateway)
                try:
                    return _run_child(cmd, umask=STATE_UMASK)[0]
                finally:
                    nginx.terminate()
        elif args.command == "supernode":
            spec = SuperNodeSpec(args.superlink, args.subject_id, args.data_path, args.ca, args.key, args.port,
                                 args.insecure, args.max_retries, args.max_wait_time,
                                 None if args.device is None else {keys.DEVICE: args.device})
            if args.subject_id is None:
                raise ValueError("--subject-id is required: it maps this device to its subject")
            cmd = supernode_command(spec)
            if not args.exec:
                sys.stdout.write(shlex.join(cmd) + "\n")
                return 0
            _preflight(args)
            code, tail = _run_child(cmd)
            if code and (err := explain_supernode_failure(code, tail, _public_key(args.key), args.connection)):
                raise err
            return code
        elif args.command == "check":
            _preflight(args)
            sys.stdout.write(f"ok: {args.superlink} reachable" + ("" if args.insecure else ", TLS verified") +
                             ("" if args.data_path is None else f", data folder {args.data_path} complete") + "\n")
        elif args.command == "connection":
            path = write_connection(args.name, args.address, ca_cert=args.ca, insecure=args.insecure,
                                    flwr_home=args.flwr_home)
            sys.stdout.write(f"wrote [superlink.{args.name}] to {path}\n")
    except (ValueError, FileExistsError) as err:
        logger.error("%s", err)
        return EXIT_USAGE
    except FedharError as err:
        logger.error("%s", err)
        return EXIT_FAULT
    return 0


def _gateway(args: argparse.Namespace) -> list[str] | None:
    """The nginx argv of ``--gateway`` (config written and checked), or ``None`` without one."""
    if args.gateway is None:
        return None
    if args.insecure or args.certs is None:
        raise ValueError("--gateway terminates TLS for the devices: it needs --certs (and no --insecure)")
    if args.host != LOOPBACK:
        raise ValueError(f"with --gateway the SuperLink listens on {LOOPBACK} only (devices dial the gateway); "
                         f"drop --host {args.host}")
    spec = GatewaySpec(listen=args.gateway, upstream_port=args.port, certs=args.certs, max_body=args.max_body)
    config = write_config(spec, args.gateway_dir)
    check_config(config, args.gateway_dir)
    return gateway_command(config, args.gateway_dir)


def _public_key(private_key: Path | None) -> Path | None:
    return None if private_key is None else private_key.with_name(private_key.name + ".pub")


if __name__ == "__main__":
    sys.exit(main())
