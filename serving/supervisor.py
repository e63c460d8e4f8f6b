"""Running the decision API under uvicorn, and saying why a worker process was replaced.

With several workers uvicorn's supervisor pings every worker over a pipe each half second
and kills one that does not answer within `timeout_worker_healthcheck` seconds, then starts
another; its log only says "Child process [pid] died", whether the worker crashed, was killed
from outside or merely did not answer in time (a slow start on a loaded host: 62 such
replacements in 5 minutes, and the server never became ready). `Supervisor` keeps uvicorn's
behaviour and logs the reason, the exit code or signal, and for a missed health check the
setting that bounds it (`WINBACK_WORKER_HEALTHCHECK_TIMEOUT`).

Nothing of `serving.api` is imported here: the parent process must not import
prometheus_client before `cli.serve.metrics_dir` sets its directory, and the workers import
the app themselves (`serving.api.app:app_from_env`).
"""

from __future__ import annotations

import logging
import signal

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from serving.settings import ServingSettings

APP_FACTORY = "serving.api.app:app_from_env"
log = logging.getLogger("uvicorn.error")


def exit_description(exitcode: int | None) -> str:
    """'exited with code 3', 'was killed by SIGKILL', ... for a worker's exit code."""
    if exitcode is None:
        return "is still running"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"was killed by {name}"
    return f"exited with code {exitcode}"


def _exited_meanwhile(process: Process, wait: float = 1.0) -> bool:
    """Whether a worker that failed its health check has in fact exited (waits up to `wait` s).

    A worker killed from outside fails the ping at once (its end of the pipe is closed) and
    may still count as alive for a moment, until the kernel lets it be reaped.
    """
    process.process.join(wait)
    return process.exitcode is not None


class Supervisor(Multiprocess):
    """uvicorn's multiprocess supervisor, logging why it replaces a worker."""

    restarts = 0

    def keep_subprocess_alive(self) -> None:
        if self.should_exit.is_set():
            return
        timeout = self.config.timeout_worker_healthcheck
        for idx, process in enumerate(self.processes):
            if not process.process.is_alive():
                why = exit_description(process.exitcode)
            elif process.ping(timeout):
                continue
            elif _exited_meanwhile(process):  # killed: its pipe broke before it was reaped
                why = exit_description(process.exitcode)
            else:
                why = (
                    f"did not answer the health check within {timeout} s (a worker still "
                    "starting on a loaded host? raise WINBACK_WORKER_HEALTHCHECK_TIMEOUT)"
                )
            process.kill()
            process.join()
            if process.exitcode == STARTUP_FAILURE:
                # as uvicorn: a worker that failed before serving would fail every restart
                log.error(
                    "Child process [%s] failed to start, stopping the parent process.",
                    process.pid,
                )
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            self.restarts += 1
            replacement = Process(self.config, self.sockets)
            replacement.start()
            self.processes[idx] = replacement
            log.warning(
                "worker [%s] %s; started worker [%s] in its place (%d replacement(s) so far)",
                process.pid,
                why,
                replacement.pid,
                self.restarts,
            )


def server_config(
    settings: ServingSettings,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
) -> uvicorn.Config:
    """The uvicorn configuration of `winback serve` (arguments override the settings)."""
    return uvicorn.Config(
        APP_FACTORY,
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers or settings.workers,
        log_level=settings.log_level,
        access_log=False,
        timeout_worker_healthcheck=settings.worker_healthcheck_timeout,
    )


def run_server(
    settings: ServingSettings,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
) -> None:
    """Serve until stopped: one process, or `Supervisor` over `workers` processes."""
    config = server_config(settings, host, port, workers)
    if config.workers > 1:
        sock = config.bind_socket()
        Supervisor(config, sockets=[sock]).run()
        return
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        raise SystemExit(STARTUP_FAILURE)
