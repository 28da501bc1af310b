"""The device gateway: nginx in front of the SuperLink, passing devices the Fleet API and nothing else.

Flower 1.41 serves the Fleet API (what a SuperNode needs), the Control API (register node
keys, start and stop runs, list nodes, read run logs) and the ServerAppIo runtime API on
one HTTP port, and its Control API's account authentication is a no-op unless an
enterprise plugin is installed. A device that holds the CA certificate could therefore
drive the whole federation. With the gateway the SuperLink listens on loopback only, and
nginx terminates TLS on the devices' address and forwards ``/v1/fleet/`` and ``/health``;
every other path gets 403. Operators reach the Control API on the server host, through
the SuperLink's loopback port. nginx also bounds a request body (a reply object) before
the SuperLink reads it.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from fedhar.errors import DeploymentError
from simulations.deploy.credentials import CA_FILE, SERVER_CERT_FILE, SERVER_KEY_FILE

__all__ = ["GatewaySpec", "check_config", "find_nginx", "gateway_command", "nginx_config", "write_config"]

CONFIG_FILE = "nginx.conf"
#: Paths a SuperNode uses: the Fleet API and the health probe.
DEVICE_PATHS = ("/v1/fleet/", "/health")


@dataclass(frozen=True)
class GatewaySpec:
    """Where devices dial, where the SuperLink listens, the TLS files, and the largest request body.

    Parameters
    ----------
    listen
        ``host:port`` the devices dial (e.g. ``0.0.0.0:8000``).
    upstream_port
        The SuperLink's port on 127.0.0.1.
    certs
        Folder from ``deploy certs`` (``ca.crt``, ``server.pem``, ``server.key``).
    max_body
        nginx size of the largest request body (``client_max_body_size``), e.g. ``64m``.
    """

    listen: str
    upstream_port: int
    certs: Path
    max_body: str = "64m"


def nginx_config(spec: GatewaySpec, workdir: Path) -> str:
    """nginx.conf text for ``spec``; logs, pid and temporary files live under ``workdir``."""
    certs, work = spec.certs.resolve(), workdir.resolve()
    upstream = f"https://127.0.0.1:{spec.upstream_port}"
    forward = (f"proxy_pass {upstream}; proxy_http_version 1.1; proxy_set_header Host $host; "
               f"proxy_ssl_verify on; proxy_ssl_trusted_certificate {certs / CA_FILE}; "
               f"proxy_ssl_name localhost; proxy_read_timeout 3600s; proxy_send_timeout 3600s; "
               # streamed both ways: no temporary files (an nginx worker started by root runs as
               # nobody and cannot write in the owner-only work folder)
               f"proxy_request_buffering off; proxy_buffering off;")
    locations = "\n".join(f"    location {'= ' if not p.endswith('/') else ''}{p} {{ {forward} }}"
                          for p in DEVICE_PATHS)
    return f"""# fedhar device gateway (simulations/deploy/gateway.py): devices reach the Fleet API only.
worker_processes 1;
pid {work / "nginx.pid"};
error_log {work / "error.log"} warn;
events {{ worker_connections 1024; }}
http {{
  access_log {work / "access.log"};
  client_body_temp_path {work / "body"};
  proxy_temp_path {work / "proxy"};
  fastcgi_temp_path {work / "fastcgi"};
  uwsgi_temp_path {work / "uwsgi"};
  scgi_temp_path {work / "scgi"};
  underscores_in_headers on;
  server {{
    listen {spec.listen} ssl;
    ssl_certificate {certs / SERVER_CERT_FILE};
    ssl_certificate_key {certs / SERVER_KEY_FILE};
    ssl_protocols TLSv1.2 TLSv1.3;
    client_max_body_size {spec.max_body};
{locations}
    location / {{ return 403; }}
  }}
}}
"""


def write_config(spec: GatewaySpec, workdir: Path) -> Path:
    """Write ``workdir/nginx.conf`` (owner-only folder) and return its path."""
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o700)
    path = workdir / CONFIG_FILE
    path.write_text(nginx_config(spec, workdir), encoding="utf-8")
    return path


def gateway_command(config: Path, workdir: Path) -> list[str]:
    """``nginx`` argv that runs the gateway in the foreground."""
    return [_nginx(), "-p", str(workdir.resolve()), "-c", str(config.resolve()), "-g", "daemon off;"]


def check_config(config: Path, workdir: Path) -> None:
    """``nginx -t`` on ``config``; a bad config or unreadable certificate is a :class:`DeploymentError`."""
    out = subprocess.run([_nginx(), "-t", "-p", str(workdir.resolve()), "-c", str(config.resolve())],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise DeploymentError(f"nginx rejects the gateway config: {out.stderr.strip()[-1000:]}", config)


def find_nginx() -> str | None:
    """Path of the nginx binary (``PATH``, then the sbin folders a non-root ``PATH`` lacks), or ``None``."""
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                          if Path(p).is_file()), None)


def _nginx() -> str:
    found = find_nginx()
    if found is None:
        raise DeploymentError("nginx is not installed (Debian/Ubuntu/JetPack: `sudo apt-get install nginx-light`)",
                              "nginx")
    return found
