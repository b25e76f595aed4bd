"""`porchlight server run --workers N` (N > 1): N serving processes, each with its own socket.

uvicorn's own supervisor gives every worker the same listening socket; whichever worker wakes
first accepts every connection waiting. Clients that keep their connections (a reverse proxy's
upstream pool, the poll load generator) open them in bursts, so one worker can end up holding
nearly all of them for their whole life while the other idles: 29 of 32 in measured runs of
`bench/server.py`, with the poll latency target missed. Here each worker listens on a socket of
its own, all bound to the same port with SO_REUSEPORT, and the kernel spreads new connections
over the sockets by a hash of each connection's addresses, whatever the workers are doing.

The supervising process opens the sockets and keeps them open: a worker that dies leaves its
socket listening, so connections the kernel gives it wait in its queue, and the worker started
in its place serves them. A worker that fails while starting (exit code 3, as uvicorn reports
a broken app or settings) stops the whole server, since every replacement would fail alike.
SIGINT and SIGTERM stop the workers gracefully (uvicorn finishes the requests in flight).
"""

from __future__ import annotations

import multiprocessing
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from types import FrameType

# uvicorn's exit code for a worker that could not start (app, settings or socket broken).
from uvicorn.config import STARTUP_FAILURE

# How long stopping workers get to finish the requests in flight before they are killed.
STOP_GRACE_SECONDS = 30.0
# How often the supervisor looks for workers that died.
CHECK_SECONDS = 0.5
_LISTEN_BACKLOG = 2048  # uvicorn's default


@dataclass(frozen=True)
class ServeOptions:
    """What every worker's uvicorn is started with (picklable, for spawned processes)."""

    host: str
    port: int
    access_log: bool


def listening_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` sockets listening on host:port, one per worker, in one SO_REUSEPORT group.

    OSError if the port cannot be had (taken by another program, or a privileged port).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # SO_REUSEPORT would also let this group join another server's on the same port (same
    # user): two servers answering at random. A bind without it fails on any port in use.
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        if port == 0:
            port = probe.getsockname()[1]
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            sock.listen(_LISTEN_BACKLOG)
            sock.set_inheritable(True)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _serve_one(sock: socket.socket, options: ServeOptions) -> None:
    """A worker process: uvicorn serving the app on this worker's own socket."""
    import uvicorn

    config = uvicorn.Config(
        "app.cli:worker_app",
        factory=True,
        host=options.host,
        port=options.port,
        log_level="info",
        access_log=options.access_log,
    )
    uvicorn.Server(config).run(sockets=[sock])


class Supervisor:
    """Starts one worker per socket, replaces workers that die, stops them all on a signal."""

    def __init__(self, sockets: list[socket.socket], options: ServeOptions) -> None:
        self._sockets = sockets
        self._options = options
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[BaseProcess] = []
        self._stop = threading.Event()

    def _start(self, index: int) -> BaseProcess:
        worker = self._context.Process(
            target=_serve_one,
            args=(self._sockets[index], self._options),
            name=f"porchlight-worker-{index}",
        )
        worker.start()
        return worker

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        _say(f"received {signal.Signals(signum).name}: stopping the workers")
        self._stop.set()

    def run(self) -> int:
        """Serve until SIGINT or SIGTERM (0), or until a worker fails to start (1)."""
        previous = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGINT, signal.SIGTERM)
        }
        status = 0
        try:
            self._workers = [self._start(i) for i in range(len(self._sockets))]
            while not self._stop.wait(CHECK_SECONDS):
                for index, worker in enumerate(self._workers):
                    if worker.is_alive():
                        continue
                    worker.join()
                    if worker.exitcode == STARTUP_FAILURE:
                        _say("a worker failed to start (see above); stopping the server")
                        self._stop.set()
                        status = 1
                        break
                    _say(
                        f"worker {index} (pid {worker.pid}) exited with code "
                        f"{worker.exitcode}; starting another"
                    )
                    self._workers[index] = self._start(index)
        finally:
            self._stop_all()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            for sock in self._sockets:
                sock.close()
        return status

    def _stop_all(self) -> None:
        for worker in self._workers:
            if worker.is_alive():
                worker.terminate()  # SIGTERM: uvicorn finishes what is in flight, then exits
        for worker in self._workers:
            worker.join(STOP_GRACE_SECONDS)
            if worker.is_alive():
                _say(f"worker pid {worker.pid} did not stop in time; killing it")
                worker.kill()
                worker.join()


def _say(message: str) -> None:
    print(f"porchlight server: {message}", file=sys.stderr, flush=True)
