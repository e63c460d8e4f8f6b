"""Running the decision API under uvicorn, and saying why a worker process was replaced.

With several workers uvicorn's supervisor pings every worker over a pipe each half second
and kills one that does not answer within `timeout_worker_healthcheck` seconds, then starts
another; its log only says "Child process [pid] died", whether the worker crashed, was killed
from outside or merely did not answer in time (a slow start on a loaded host: 62 such
replacements in 5 minutes, and the server never became ready). `Supervisor` keeps uvicorn's
behaviour and logs the reason, the exit code or signal, and for a missed health check the
setting that bounds it (`WINBACK_WORKER_HEALTHCHECK_TIMEOUT`).

Each worker listens on a socket of its own. With one listening socket shared by every
worker, the worker that woke first accepted every connection waiting (the event loop
accepts until the backlog is empty), so a client that opens its connection pool in a burst
had all of it on one worker: `wrk -c 16` on two idle workers, 25 s after both were ready,
left 969 CPU ticks in one worker and 5 in the other, and the API ran at one worker's
throughput. With `SO_REUSEPORT` (Linux) the kernel spreads new connections over the
workers' sockets by a hash of their addresses. A socket only takes connections once its
worker listens on it (after the worker's start-up). When a worker dies, its socket is closed
at once (the few connections queued on it and not yet accepted are reset) and a new one is
bound for its replacement: left open, it would have held its share of new connections
unanswered until the replacement finished loading its snapshot. Where `SO_REUSEPORT` is
missing (or the server is on a Unix socket), every worker shares one socket, as in uvicorn.

Nothing of `serving.api` is imported here: the parent process must not import
prometheus_client before `cli.serve.metrics_dir` sets its directory, and the workers import
the app themselves (`serving.api.app:app_from_env`).
"""

from __future__ import annotations

import logging
import signal
import socket

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


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port) with `SO_REUSEPORT`, not yet listening (the worker
    that serves it listens once started).

    Raises:
        OSError: the address cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def check_port_free(host: str, port: int) -> None:
    """Raise OSError (address in use) if any socket listens on (host, port).

    A plain bind fails where a socket listens; a `SO_REUSEPORT` bind would succeed beside
    another server's `SO_REUSEPORT` sockets (a second `winback serve` on the same port) and
    silently share its connections with it.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))


class Supervisor(Multiprocess):
    """uvicorn's multiprocess supervisor with a listening socket per worker (`SO_REUSEPORT`;
    `shared`: one socket for all, uvicorn's way), logging why it replaces a worker."""

    restarts = 0

    def __init__(self, config: uvicorn.Config, shared: socket.socket | None = None) -> None:
        self.shared = shared
        self.host, self.port = str(config.host), int(config.port)
        self.slots: list[socket.socket] = []
        if shared is None:
            try:
                if self.port != 0:
                    check_port_free(self.host, self.port)
                for _ in range(config.workers):
                    self.slots.append(self._bind())
            except OSError as exc:
                for sock in self.slots:
                    sock.close()
                log.error("cannot listen on %s:%d: %s", self.host, self.port, exc)
                raise SystemExit(STARTUP_FAILURE) from exc
            log.info(
                "Uvicorn running on http://%s:%d, one SO_REUSEPORT socket per worker (%d)",
                config.host,
                self.port,
                config.workers,
            )
        super().__init__(config, sockets=[shared] if shared is not None else [])

    def _bind(self) -> socket.socket:
        sock = reuseport_socket(self.host, self.port)
        self.port = int(sock.getsockname()[1])  # port 0: every later socket on the one it got
        return sock

    def _sockets(self, idx: int) -> list[socket.socket]:
        return [self.shared] if self.shared is not None else [self.slots[idx]]

    def _start(self, idx: int) -> Process:
        process = Process(self.config, self._sockets(idx))
        process.start()
        return process

    def _renew(self, idx: int) -> bool:
        """A dead worker's socket closed and a fresh one bound for its replacement; False
        (logged, the server stopping) if the address can no longer be bound."""
        if self.shared is None:
            self.slots[idx].close()
            try:
                self.slots[idx] = self._bind()
            except OSError as exc:
                log.error("cannot bind a socket for a replacement worker, stopping: %s", exc)
                self.should_exit.set()
                return False
        return True

    def init_processes(self) -> None:
        self.processes = [self._start(i) for i in range(self.processes_num)]

    def restart_all(self) -> None:
        """SIGHUP: each worker replaced in turn, its replacement ready (on the same socket)
        before the old one is retired, as uvicorn does."""
        for idx, old in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            new = self._start(idx)
            if not new.wait_until_ready(self.config.timeout_worker_healthcheck, self.should_exit):
                new.kill()
                new.join()
                if not self.should_exit.is_set():
                    log.error(
                        "New child process [%s] was not ready in time; keeping worker [%s] "
                        "and aborting the restart.",
                        new.pid,
                        old.pid,
                    )
                return
            old.terminate()
            old.join()
            self.processes[idx] = new

    def handle_ttin(self) -> None:
        log.info("Received SIGTTIN, increasing the number of processes.")
        if self.shared is None:
            try:
                self.slots.append(self._bind())
            except OSError as exc:
                log.error("cannot bind a socket for another worker, not adding one: %s", exc)
                return
        self.processes_num += 1
        self.processes.append(self._start(len(self.processes)))

    def handle_ttou(self) -> None:
        log.info("Received SIGTTOU, decreasing number of processes.")
        if self.processes_num <= 1:
            log.info("Already reached one process, cannot decrease the number of processes.")
            return
        self.processes_num -= 1
        process = self.processes.pop()
        process.terminate()
        process.join()
        if self.shared is None:
            self.slots.pop().close()

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
            if not self._renew(idx):
                return
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
            replacement = self._start(idx)
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
        per_worker = hasattr(socket, "SO_REUSEPORT") and config.uds is None and config.fd is None
        Supervisor(config, None if per_worker else config.bind_socket()).run()
        return
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        raise SystemExit(STARTUP_FAILURE)
