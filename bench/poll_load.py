"""A lean load generator for signed device polls (`GET /api/device/asks`), used by server.py.

It measures the server, not an HTTP client library: each process signs its requests before
the timed phase (the timestamps stay well inside the server's clock-skew window), then
asyncio coroutines write the raw HTTP/1.1 bytes on keep-alive connections and read each
response to its last byte. Latency is from the write to the full response.

Two modes:
* closed loop: every connection sends its next request as soon as the previous answer is in
  (the highest throughput the server sustains with that many requests in flight);
* open loop: requests are due at a fixed total rate whatever the server does; a connection
  still busy when its next request is due sends it late, and `late_p99_ms` says by how much
  (latency from the due time is also reported, so queueing is not hidden).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import random
import time
from dataclasses import dataclass
from typing import Any, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.cli import settle_heap
from porchlight.client import sign_device_call

POLL_PATH = "/api/device/asks"
Device = tuple[int, str, bytes]  # id, credential, private key seed


def signed_poll(host: str, device: Device, key: Ed25519PrivateKey | None = None) -> bytes:
    """The raw bytes of one signed poll."""
    device_id, credential, seed = device
    key = key or Ed25519PrivateKey.from_private_bytes(seed)
    headers = sign_device_call(key, device_id, credential, "GET", POLL_PATH)
    lines = [f"GET {POLL_PATH} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


@dataclass
class Share:
    """One process's part of a run."""

    host: str
    port: int
    devices: list[Device]
    requests: int  # how many to sign (each-once: one per device, in order)
    each_once: bool
    seconds: float
    connections: int
    rate: float | None  # this process's requests per second (open loop); None: closed loop


class _Connection(asyncio.Protocol):
    """One keep-alive connection: writes a request, resolves when its whole response is in.

    A bare protocol rather than asyncio's streams, to keep the client's share of a shared
    2-core machine small (its CPU per poll is reported; the two readers are not compared).
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._waiter: asyncio.Future[None] | None = None
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buffer[: end + 4])
        at = head.lower().find(b"\r\ncontent-length:")
        if at < 0:
            waiter.set_exception(RuntimeError(f"response without Content-Length: {head[:200]!r}"))
            return
        total = end + 4 + int(head[at + 17 : head.index(b"\r\n", at + 2)])
        if len(buffer) < total:
            return
        status = int(head[9:12])
        if status != 200:
            body = bytes(buffer[end + 4 : total])
            waiter.set_exception(RuntimeError(f"poll refused: {status} {body[:300]!r}"))
        else:
            waiter.set_result(None)
        del buffer[:total]

    def connection_lost(self, exc: Exception | None) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc or ConnectionError("the server closed the connection"))

    async def send(self, request: bytes) -> None:
        """Write one request and wait for its whole response (a 200)."""
        assert self._transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(request)
        await self._waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def _run(share: Share, requests: list[bytes], start_at: float) -> dict[str, Any]:
    latencies: list[float] = []
    from_due: list[float] = []
    late: list[float] = []
    cursor = 0
    host = f"{share.host}:{share.port}"
    keys: dict[int, Ed25519PrivateKey] = {}
    rng = random.Random()
    signed_late = 0

    def next_request() -> bytes | None:
        nonlocal cursor, signed_late
        if cursor < len(requests):
            cursor += 1
            return requests[cursor - 1]
        if share.each_once:
            return None
        # Ran past what was signed beforehand: sign now (counted, so a figure can be doubted).
        device = share.devices[rng.randrange(len(share.devices))]
        key = keys.get(device[0]) or Ed25519PrivateKey.from_private_bytes(device[2])
        keys[device[0]] = key
        signed_late += 1
        return signed_poll(host, device, key)

    loop = asyncio.get_running_loop()
    connections: list[_Connection] = []
    for _ in range(share.connections):
        _, connection = await loop.create_connection(_Connection, share.host, share.port)
        connections.append(connection)
    await asyncio.sleep(max(0.0, start_at - time.time()))
    began = time.perf_counter()
    began_cpu = time.process_time()
    stop_at = began + share.seconds

    async def closed(connection: _Connection) -> None:
        while share.each_once or time.perf_counter() < stop_at:
            request = next_request()
            if request is None:
                return
            sent = time.perf_counter()
            await connection.send(request)
            latencies.append(time.perf_counter() - sent)

    async def paced(index: int, connection: _Connection) -> None:
        assert share.rate is not None
        slot = index
        while True:
            due = began + slot / share.rate
            if due >= stop_at:
                return
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            request = next_request()
            if request is None:
                return
            sent = time.perf_counter()
            late.append(max(0.0, sent - due))
            await connection.send(request)
            done = time.perf_counter()
            latencies.append(done - sent)
            from_due.append(done - due)
            slot += share.connections

    if share.rate is None:
        await asyncio.gather(*(closed(c) for c in connections))
    else:
        await asyncio.gather(*(paced(i, c) for i, c in enumerate(connections)))
    wall = time.perf_counter() - began
    cpu = time.process_time() - began_cpu
    for connection in connections:
        connection.close()
    return {
        "latencies": latencies,
        "from_due": from_due,
        "late": late,
        "wall": wall,
        "cpu": cpu,
        "signed_late": signed_late,
    }


def _process(share: Share, barrier: Any, start_box: Any, results: Any) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    host = f"{share.host}:{share.port}"
    if share.each_once:
        requests = [signed_poll(host, device) for device in share.devices]
    else:
        rng = random.Random()
        keys = {d[0]: Ed25519PrivateKey.from_private_bytes(d[2]) for d in share.devices}
        requests = []
        for _ in range(share.requests):
            device = share.devices[rng.randrange(len(share.devices))]
            requests.append(signed_poll(host, device, keys[device[0]]))
    # As the server's workers do: a collection pause here would count as the server's latency.
    settle_heap()
    barrier.wait()  # every process has signed; the parent sets the common start time
    barrier.wait()
    results.put(asyncio.run(_run(share, requests, start_box.value)))


@dataclass
class LoadResult:
    count: int
    wall: float
    p50_ms: float
    p99_ms: float
    due_p99_ms: float | None  # open loop: p99 from the due time (includes any queueing)
    late_p99_ms: float | None
    signed_late: int
    cpu_seconds: float  # the load processes' own CPU over the timed phase

    @property
    def rate(self) -> float:
        return self.count / self.wall


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] * 1000


def run(
    host: str,
    port: int,
    devices: list[Device],
    *,
    processes: int,
    connections: int,
    seconds: float = 0.0,
    rate: float | None = None,
    each_once: bool = False,
    sign_rate: float = 2500.0,
) -> LoadResult:
    """Drive polls from `processes` processes x `connections` keep-alive connections.

    `each_once`: every device polls exactly once (closed loop). Otherwise for `seconds`, at
    `rate` polls/s in total (open loop) or as fast as answers come (rate None). Requests are
    signed beforehand: `rate` of them per second, or `sign_rate` for a closed loop.
    """
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes + 1)
    start_box = context.Value("d", 0.0)
    results = context.Queue()
    per_process = int((rate or sign_rate) * seconds / processes) + connections
    shares = [
        Share(
            host,
            port,
            devices[i::processes],
            per_process,
            each_once,
            seconds,
            connections,
            None if rate is None else rate / processes,
        )
        for i in range(processes)
    ]
    workers = [
        context.Process(target=_process, args=(share, barrier, start_box, results))
        for share in shares
    ]
    for worker in workers:
        worker.start()
    barrier.wait()
    start_box.value = time.time() + 0.2
    barrier.wait()
    outcomes = []
    while len(outcomes) < len(workers):
        try:
            outcomes.append(results.get(timeout=1.0))
        except queue.Empty:
            # A load process that died (e.g. the server reset its connections) puts nothing:
            # say so instead of waiting for ever.
            failed = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
            if failed:
                raise RuntimeError(f"load process failed ({failed[0]})") from None
    for worker in workers:
        worker.join()
        if worker.exitcode != 0:
            raise RuntimeError(f"load process failed ({worker.exitcode})")
    latencies = [x for o in outcomes for x in o["latencies"]]
    from_due = [x for o in outcomes for x in o["from_due"]]
    late = [x for o in outcomes for x in o["late"]]
    return LoadResult(
        count=len(latencies),
        wall=max(o["wall"] for o in outcomes),
        p50_ms=_percentile(latencies, 0.50),
        p99_ms=_percentile(latencies, 0.99),
        due_p99_ms=_percentile(from_due, 0.99) if from_due else None,
        late_p99_ms=_percentile(late, 0.99) if late else None,
        signed_late=sum(o["signed_late"] for o in outcomes),
        cpu_seconds=sum(o["cpu"] for o in outcomes),
    )
