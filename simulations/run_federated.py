"""Launch `flwr run --stream`, echo its log, and exit non-zero if the run failed or wrote no results.

`flwr run` exits 0 even when the ServerApp crashed. This wrapper checks, in order: the
exit code of `flwr run`, the run's status in `flwr ls --format json` (``finished:failed``
or anything but ``finished:completed`` fails), and the run's ``results.json`` in the folder
that follows from the run config and the run id (:func:`strategies.run_config.run_folder`;
it must exist and parse as JSON).

A run that ends ``finished:failed`` without a results file is launched again only when
asked, up to ``--retries`` times (default 0). On a saturated machine Flower 1.41's local SuperLink can
expire a simulation task whose heartbeats were delayed ("No heartbeat received from the
task", 60 s after the last one acknowledged); such a run failed for reasons outside the
app. A genuine failure fails every attempt.

Each attempt runs on a local SuperLink this command starts and stops
(:mod:`simulations.local_superlink`), so a timed-out or lost run's ``flwr-simulation``
process and its Ray cluster stop with it. A SuperLink that already answers on the port
(``FLWR_LOCAL_SUPERLINK_HTTP_API_PORT``, default 39091) is used and left alone.

Usage::

    python -m simulations.run_federated --run-config 'hydra-overrides="dataset=synthetic"' \\
        --federation-config "num-supernodes=5 client-resources-num-cpus=1"
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from flwr.common.config import parse_config_args

from fedhar.errors import ConfigError
from simulations.local_superlink import SuperLinkError, local_superlink
from strategies.run_config import output_root, run_folder

__all__ = [
    "RunOutcome",
    "check_run",
    "failure_line",
    "free_port",
    "main",
    "run",
]

logger = logging.getLogger(__name__)

_RUN_ID = re.compile(r"Successfully started run (\d+)")
_COMPLETED = "finished:completed"
_FAILED = "finished:failed"
EXIT_FAILED = 1
RESULTS_FILE = "results.json"
EXIT_NO_RESULTS = 2
#: Exit code of a run killed by --timeout (the convention of coreutils timeout).
EXIT_TIMEOUT = 124
#: Seconds to wait for the rest of the output after a timed-out `flwr run` was killed.
READER_GRACE_S = 5.0


@dataclass(frozen=True)
class RunOutcome:
    """What a finished `flwr run` left: its run id, its status in `flwr ls`, where its results file belongs."""

    run_id: int | None
    status: str | None
    results: Path | None


def run(app: str, run_config: Sequence[str], federation_config: Sequence[str], env: dict[str, str],
        timeout: float | None) -> tuple[int, list[str]]:
    """Run `flwr run <app> --stream ...`, echo every line, return ``(exit code, lines)``.

    ``timeout`` bounds the whole run, silent stretches included: `flwr run` is then killed
    and the exit code is ``EXIT_TIMEOUT``.
    """
    cmd = ["flwr", "run", app, "--stream"]
    for item in run_config:
        cmd += ["--run-config", item]
    for item in federation_config:
        cmd += ["--federation-config", item]
    logger.info("running: %s", " ".join(cmd))
    lines: list[str] = []
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)

    def echo() -> None:
        for line in proc.stdout or ():
            sys.stdout.write(line)
            sys.stdout.flush()
            lines.append(line.rstrip("\n"))

    # The stream is read on a daemon thread: neither a silent run nor a child that still holds
    # the pipe after the kill can block the timeout (the pipe is then left to the thread).
    reader = threading.Thread(target=echo, daemon=True)
    reader.start()
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        reader.join(READER_GRACE_S)
        logger.error("flwr run killed after %.0f s (--timeout)", timeout)
        return EXIT_TIMEOUT, list(lines)
    except BaseException:  # this command was stopped (SIGTERM, Ctrl-C): do not leave `flwr run` behind
        proc.kill()
        raise
    reader.join()
    if proc.stdout is not None:
        proc.stdout.close()
    return code, lines


def run_status(run_id: int, env: dict[str, str]) -> str | None:
    """Status of ``run_id`` from `flwr ls --format json`, or ``None`` if it cannot be read."""
    out = subprocess.run(["flwr", "ls", "--format", "json"], capture_output=True, text=True, env=env, check=False)
    try:
        payload = json.loads(out.stdout)
    except json.JSONDecodeError:
        logger.warning("flwr ls did not return JSON: %s", out.stdout[-500:] + out.stderr[-500:])
        return None
    for entry in payload.get("runs", []):
        if str(entry.get("run-id")) == str(run_id):
            return str(entry.get("status"))
    return None


def check_run(lines: Sequence[str], root: Path, run_config: Mapping[str, object],
              status_of: Callable[[int], str | None] | None = None) -> RunOutcome:
    """The run id Flower printed in ``lines``, its status, and its results path (under ``root``, from the id)."""
    run_id = next((int(m.group(1)) for line in lines if (m := _RUN_ID.search(line))), None)
    results = run_folder(root, run_config, run_id) / RESULTS_FILE if run_id is not None else None
    status = status_of(run_id) if status_of is not None and run_id is not None else None
    return RunOutcome(run_id, status, results)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on now (for a private local SuperLink)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _lost_task(code: int, outcome: RunOutcome) -> bool:
    """Whether a run started, then ended ``finished:failed`` with no results file (worth one more try)."""
    no_results = outcome.results is None or not outcome.results.is_file()
    return code == 0 and outcome.run_id is not None and outcome.status == _FAILED and no_results


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("app", nargs="?", default=".", help="Flower app folder (default: .)")
    parser.add_argument("--run-config", "-c", action="append", default=[], help="passed to flwr run (repeatable)")
    parser.add_argument("--federation-config", action="append", default=[], help="passed to flwr run (repeatable)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds before the run is killed")
    parser.add_argument("--resume", metavar="RUN_ID", default=None,
                        help="continue a killed run in its own folder from its last complete stage-1 round "
                             "(same config and seeds; docs/federated.md)")
    parser.add_argument("--retries", type=int, default=0,
                        help="relaunches of a run that ended finished:failed without results (default 0: a failure "
                             "costs one run)")
    args = parser.parse_args(argv)
    if args.resume is not None:
        if not args.resume.isdigit():
            parser.error(f"--resume expects the run id of the killed run (its folder name), got {args.resume!r}")
        args.run_config = [*args.run_config, f"resume='{args.resume}'"]
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the SuperLink health probes
    try:  # the bad run config fails here, before any run starts
        run_config = parse_config_args(args.run_config)
        root = output_root(run_config)
    except (ConfigError, ValueError) as err:
        parser.error(f"--run-config: {err}")
    env = dict(os.environ)
    env.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
    try:
        with _sigterm_exits():  # `kill <pid>` of this command still stops the SuperLink it started
            for attempt in range(args.retries + 1):
                # A SuperLink per attempt: stopping it stops whatever the attempt left running.
                with local_superlink(env) as link:
                    code, lines = run(args.app, args.run_config, args.federation_config, env, args.timeout)
                    if code == EXIT_TIMEOUT:
                        if link is None:
                            logger.error("the timed-out run's simulation may still run on the SuperLink this command did "
                                         "not start")
                        return EXIT_TIMEOUT
                    outcome = check_run(lines, root, run_config, lambda rid: run_status(rid, env))
                logger.info("flwr run exit %d, run %s, status %s, results %s", code, outcome.run_id, outcome.status,
                            outcome.results)
                if not _lost_task(code, outcome) or attempt == args.retries:
                    break
                logger.warning("run %s ended %s without results (Flower drops a simulation task whose heartbeats "
                               "are late on a saturated machine); retry %d of %d", outcome.run_id, outcome.status,
                               attempt + 1, args.retries)
    except SuperLinkError as err:
        logger.error("%s", err)
        print(failure_line(None, [f"SuperLinkError: {err}"]), flush=True)
        return EXIT_FAILED
    if code != 0 or outcome.run_id is None:
        logger.error("flwr run failed (exit %d) or started no run", code)
        print(failure_line(outcome.run_id, lines), flush=True)
        return EXIT_FAILED
    if outcome.status is not None and outcome.status != _COMPLETED:
        logger.error("run %d ended with status %s", outcome.run_id, outcome.status)
        print(failure_line(outcome.run_id, lines), flush=True)
        return EXIT_FAILED
    if outcome.results is None or not outcome.results.is_file():
        logger.error("run %d wrote no results file at %s (a SuperLink started earlier with another "
                     "FEDHAR_OUTPUT_DIR writes into its own; stop it or use a private FLWR_HOME)",
                     outcome.run_id, outcome.results)
        return EXIT_NO_RESULTS
    try:
        results = json.loads(outcome.results.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        logger.error("results file %s is unreadable: %s", outcome.results, err)
        return EXIT_NO_RESULTS
    logger.info("run %d completed; results in %s", outcome.run_id, outcome.results)
    print(_closing(results, outcome.results), flush=True)
    return 0


def _exit_on_signal(signum: int, _frame: object) -> None:
    """Turn SIGTERM into SystemExit (128 + signal): context managers and finally blocks run."""
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def _sigterm_exits() -> Iterator[None]:
    """While inside, SIGTERM raises SystemExit (main thread only); the previous handler is restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


_ERROR_LINE = re.compile(r"\b(?:fedhar\.errors\.)?(\w*Error): (.+)$")


def failure_line(run_id: int | None, lines: Sequence[str]) -> str:
    """One closing line for a failed run: the last error the ServerApp raised (as streamed), if any."""
    found = [m for line in lines if (m := _ERROR_LINE.search(line))]
    errors = [m for m in found if "fedhar.errors." in m.string] or found  # the ServerApp's own error first
    if errors:
        reason = f"{errors[-1].group(1)}: {errors[-1].group(2).strip()}"
    else:  # the flwr CLI's own refusal, drawn in a box: "╭─ Error ─╮ / │ text │ / ╰──╯"
        reason = _cli_error_box(lines) or "no error in the streamed log"
    return f"fedhar run {run_id if run_id is not None else '(none started)'} failed: {reason}"


def _cli_error_box(lines: Sequence[str]) -> str | None:
    """The text of the last ``Error`` box the flwr CLI drew in ``lines``, on one line, or ``None``."""
    starts = [i for i, line in enumerate(lines) if line.lstrip().startswith("╭─ Error")]
    if not starts:
        return None
    text = []
    for line in lines[starts[-1] + 1:]:
        if line.lstrip().startswith("╰"):
            break
        text.append(line.strip().strip("│").strip())
    return "flwr: " + " ".join(t for t in text if t) if text else None


def _closing(results: dict, results_path: Path) -> str:
    """The closing summary, after writing the convergence plot beside ``results.json`` (a plot failure only warns)."""
    from simulations.run_summary import PLOT_FILE, closing_summary, plot_convergence

    plot: Path | None = results_path.parent / PLOT_FILE
    try:
        plot_convergence(results, plot)  # type: ignore[arg-type]
    except (OSError, KeyError, TypeError, ValueError) as err:
        logger.warning("no convergence plot: %s", err)
        plot = None
    try:
        return closing_summary(results, results_path, plot)
    except (KeyError, TypeError, ValueError) as err:
        logger.warning("no closing summary (results.json of another fedhar version?): %s", err)
        return f"results: {results_path}"


if __name__ == "__main__":
    sys.exit(main())
