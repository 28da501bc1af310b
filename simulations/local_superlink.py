"""The local simulation SuperLink, started and stopped by the command that needs it.

`flwr run` starts a detached SuperLink on first use and leaves it running; the SuperLink
starts a SuperExec in a session of its own, which starts the ``flwr-simulation`` process
and its Ray cluster. Nothing stops them when a run times out or is lost. This module
launches the same SuperLink (the command of ``flwr/cli/local_superlink.py`` in Flower 1.41,
so `flwr run` finds it and uses it) as a child of ours, and stops it with every process
below it: the run's leftovers go with the SuperLink that started them, and SuperLinks of
other commands (other ports, other ``FLWR_HOME``) are never touched.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
from flwr.cli.constant import CONTROL_API_PROBE_INTERVAL, CONTROL_API_PROBE_TIMEOUT, LOCAL_SUPERLINK_STARTUP_TIMEOUT
from flwr.common.constant import ISOLATION_MODE_SUBPROCESS

__all__ = ["SuperLinkError", "is_running", "local_superlink", "start", "stop"]

logger = logging.getLogger(__name__)

#: Flower's defaults when FLWR_LOCAL_SUPERLINK_HTTP_API_PORT / FLWR_LOCAL_CONTROL_API_PORT are unset.
DEFAULT_HTTP_PORT = "39091"
DEFAULT_CONTROL_PORT = "39093"
#: Seconds the SuperLink's processes get to exit after SIGTERM before they are killed.
STOP_GRACE_S = 10.0


class SuperLinkError(RuntimeError):
    """The local SuperLink could not be started."""


def _port(env: Mapping[str, str]) -> str:
    return env.get("FLWR_LOCAL_SUPERLINK_HTTP_API_PORT", DEFAULT_HTTP_PORT)


def _flwr_home(env: Mapping[str, str]) -> Path:
    return Path(env["FLWR_HOME"]) if env.get("FLWR_HOME") else Path.home() / ".flwr"


def is_running(env: Mapping[str, str]) -> bool:
    """Whether a SuperLink answers on the local port that `flwr run` would use under ``env``."""
    try:
        return httpx.get(f"http://127.0.0.1:{_port(env)}/health", timeout=CONTROL_API_PROBE_TIMEOUT).is_success
    except httpx.HTTPError:
        return False


def start(env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Launch the local simulation SuperLink for ``env`` and wait until it answers.

    Its state and log live under ``$FLWR_HOME/local-superlink/`` as with `flwr run`'s own.
    """
    runtime_dir = _flwr_home(env) / "local-superlink"
    runtime_dir.mkdir(parents=True, exist_ok=True)
    control = env.get("FLWR_LOCAL_CONTROL_API_PORT", DEFAULT_CONTROL_PORT)
    log_file = runtime_dir / "superlink.log"
    command = ["flower-superlink", "--insecure", "--simulation", "--isolation", ISOLATION_MODE_SUBPROCESS,
               "--control-api-address", f"127.0.0.1:{control}", "--host", "127.0.0.1", "--port", _port(env),
               "--log-file", str(log_file), "--database", str(runtime_dir / "state.db")]
    try:
        proc = subprocess.Popen(command, env={**env, "FLWR_DISABLE_UPDATE_CHECK": "1"},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)  # a Ctrl-C reaches us, and we stop the whole tree
    except OSError as err:
        raise SuperLinkError(f"cannot launch flower-superlink: {err}") from err
    deadline = time.monotonic() + LOCAL_SUPERLINK_STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SuperLinkError(f"flower-superlink exited with code {proc.returncode}; see {log_file}")
        if is_running(env):
            logger.info("started a local SuperLink (pid %d) on 127.0.0.1:%s", proc.pid, _port(env))
            return proc
        time.sleep(CONTROL_API_PROBE_INTERVAL)
    stop(proc)
    raise SuperLinkError(f"flower-superlink did not answer within {LOCAL_SUPERLINK_STARTUP_TIMEOUT:.0f} s; "
                         f"see {log_file}")


def stop(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM the SuperLink ``proc`` and every process below it, SIGKILL what is left; return how many.

    The tree is read before the first signal: SuperExec, the simulation and its Ray
    processes run in sessions of their own and are re-parented once their parent exits.
    """
    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    for member in tree:
        try:
            member.terminate()
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(tree, timeout=STOP_GRACE_S)
    for member in alive:
        try:
            member.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(alive, timeout=STOP_GRACE_S)
    if proc.poll() is None:
        proc.wait(timeout=STOP_GRACE_S)
    return len(tree)


@contextmanager
def local_superlink(env: Mapping[str, str]) -> Iterator[subprocess.Popen[bytes] | None]:
    """The SuperLink `flwr run` will use under ``env``: started here and stopped on exit, or ``None``.

    ``None`` means one already answered on that port (started by someone else): it is used
    and left running, and what its runs leave behind is not this command's to stop.
    """
    if is_running(env):
        logger.warning("a SuperLink already listens on 127.0.0.1:%s (not started by this command): using it; a "
                       "timed-out or lost run's simulation there is not stopped", _port(env))
        yield None
        return
    proc = start(env)
    try:
        yield proc
    finally:
        logger.info("stopped the local SuperLink: %d process(es)", stop(proc))
