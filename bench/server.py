"""Server throughput on PostgreSQL: device polls, request fan-out, 1 GiB clip transfer.

Creates a fresh PostgreSQL database (dropped at the end), migrates it, enrols --devices
devices (rows written in bulk: enrolment itself is not what is measured) spread within 400 m
of one point, and starts the server as production does (`porchlight server run`: --workers
processes, one per CPU by default, default settings, so no access log) on a loopback port. Then:

* fan-out: one reviewer approval that matches every device (the POST's wall time: checks,
  matching, 10,000 asks inserted, log entries, commit);
* polls (bench/poll_load.py: raw HTTP/1.1 on keep-alive connections, requests signed before
  the timed phase): every device's first poll (which logs the delivery of its ask), then
  --poll-seconds of signed `GET /api/device/asks` for random devices, closed loop (as fast as
  answers come, --connections per process) and open loop (paced at --poll-rate); throughput,
  latency p50/p99 from send to full response, and server CPU per poll: the server processes
  plus the PostgreSQL processes serving its database (and the WAL writer), and the load
  generator's own CPU per poll beside it (what it leaves of the machine for the server);
* transfer: one consented ask uploads a --size-mib age file (streamed, signed over its
  SHA-256) and the requester downloads it; MB/s each way, the server's RSS growth (VmRSS
  sampled every 20 ms, against the value before the transfer) and its CPU per GiB moved
  (user + system of every server process, median of the --transfers runs).

The load generators run on the same machine as the server and PostgreSQL and compete with
them for the CPU: the figures are a floor for a dedicated server.

    .venv/bin/python bench/server.py [--devices 10000] [--poll-seconds 15] [--size-mib 1024]
        [--workers 2] [--poll-rate 1000] [--no-transfer]
        [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres]

Targets (issue 6): >= 1,000 polls/s with p99 < 50 ms; fan-out of 10,000 asks < 2 s;
transfer >= 300 MB/s with RSS growth < 50 MiB.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app import tokens  # noqa: E402
from app.accounts import service as accounts  # noqa: E402
from app.accounts.models import User  # noqa: E402
from app.accounts.passwords import make_hasher  # noqa: E402
from app.agencies import service as agencies  # noqa: E402
from app.db import make_engine, make_sessionmaker  # noqa: E402
from app.devices.location import coarsen  # noqa: E402
from app.devices.models import Device  # noqa: E402
from app.migrate import upgrade  # noqa: E402
from app.permissions import Role  # noqa: E402
from bench import poll_load  # noqa: E402
from bench.common import fresh_database  # noqa: E402
from bench.serving import free_port, serving  # noqa: E402
from porchlight import consent  # noqa: E402
from porchlight.age import encrypt_file, generate_identity, parse_recipient  # noqa: E402
from porchlight.client import raw_public_key, sign_device_call  # noqa: E402
from porchlight.manifest import ClipManifest, format_time, public_key_text  # noqa: E402

MIB = 1024 * 1024
GIB = 1024 * MIB
CENTRE = (51.5010, -0.1420)


def spread(count: int, radius_m: float) -> Iterator[tuple[float, float]]:
    rng = random.Random(6)
    for _ in range(count):
        distance, bearing = radius_m * math.sqrt(rng.random()), rng.random() * 2 * math.pi
        north, east = distance * math.cos(bearing), distance * math.sin(bearing)
        yield (
            CENTRE[0] + north / 111_320.0,
            CENTRE[1] + east / (111_320.0 * math.cos(math.radians(CENTRE[0]))),
        )


def seed(url: str, devices: int) -> dict[str, Any]:
    """People through the real services; devices (and their residents) in bulk."""
    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    hasher = make_hasher(3, 65536)
    now = datetime.now(UTC)
    identity = generate_identity("x25519")
    with factory() as session, session.begin():
        admin = accounts.create_user(
            session,
            hasher,
            username="admin",
            password=secrets.token_urlsafe(18),
            role=Role.admin,
            agency_id=None,
            actor="system",
            now=now,
        )
        agency = agencies.create_agency(
            session, admin, "Bench Police", "Benchshire", str(identity.recipient()), now
        )
        requester = accounts.create_user(
            session,
            hasher,
            username="officer",
            password=secrets.token_urlsafe(18),
            role=Role.requester,
            agency_id=agency.id,
            actor="system",
            now=now,
        )
        reviewer = accounts.create_user(
            session,
            hasher,
            username="reviewer",
            password=secrets.token_urlsafe(18),
            role=Role.reviewer,
            agency_id=None,
            actor="system",
            now=now,
        )
        _, requester_token = accounts.create_api_token(session, requester, "bench", now)
        _, reviewer_token = accounts.create_api_token(session, reviewer, "bench", now)
        password_hash = admin.password_hash
    keys = [Ed25519PrivateKey.generate() for _ in range(devices)]
    credentials = [tokens.new_secret("dev") for _ in range(devices)]
    with factory() as session, session.begin():
        residents = (
            session.execute(
                insert(User).returning(User.id),
                [
                    {
                        "username": f"resident{i}",
                        "role": "resident",
                        "password_hash": password_hash,
                        "created_at": now,
                    }
                    for i in range(devices)
                ],
            )
            .scalars()
            .all()
        )
        rows = []
        for i, (lat, lon) in enumerate(spread(devices, 400)):
            lat_milli, lon_milli = coarsen(lat, lon)
            rows.append(
                {
                    "owner_id": residents[i],
                    "name": f"porch{i}",
                    "public_key": raw_public_key(keys[i]),
                    "credential_hash": tokens.digest(credentials[i]),
                    "lat_milli": lat_milli,
                    "lon_milli": lon_milli,
                    "enrolled_at": now,
                }
            )
        device_ids = session.execute(insert(Device).returning(Device.id), rows).scalars().all()
    engine.dispose()
    return {
        "requester_token": requester_token,
        "reviewer_token": reviewer_token,
        "identity": identity,
        "devices": [
            (device_ids[i], credentials[i], keys[i].private_bytes_raw()) for i in range(devices)
        ],
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """The process and its descendants (the server's uvicorn workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def rss_kib(pid: int) -> int:
    """Resident memory of the server: the process and its workers, summed."""
    total = 0
    for member in process_tree(pid):
        try:
            lines = Path(f"/proc/{member}/status").read_text().splitlines()
        except OSError:
            continue
        total += sum(int(line.split()[1]) for line in lines if line.startswith("VmRSS:"))
    return total


def database_pids(url: str) -> list[int]:
    """PostgreSQL processes doing this benchmark's work: the backends connected to its
    database, and the shared background writers (WAL writer, checkpointer, bgwriter)."""
    engine = create_engine(url)
    with engine.connect() as connection:
        pids = connection.execute(
            text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() OR backend_type IN "
                "('walwriter', 'checkpointer', 'background writer')"
            )
        ).scalars()
        found = list(pids)
    engine.dispose()
    return found


class CpuMeter:
    """CPU seconds used by the server's processes and its database's PostgreSQL processes."""

    def __init__(self, server_pid: int, url: str) -> None:
        self.server_pid, self.url = server_pid, url
        self.server = {p: cpu_seconds(p) for p in process_tree(server_pid)}
        self.database = {p: cpu_seconds(p) for p in database_pids(url)}

    def used(self) -> tuple[float, float]:
        """(server, database) CPU seconds since this meter was made."""
        server = sum(
            cpu_seconds(p) - self.server.get(p, 0.0) for p in process_tree(self.server_pid)
        )
        database = sum(cpu_seconds(p) - self.database.get(p, 0.0) for p in database_pids(self.url))
        return server, database


@contextmanager
def server(url: str, data_dir: Path, workers: int) -> Iterator[tuple[str, int]]:
    port = free_port()
    env = {**os.environ, "PORCHLIGHT_DATABASE_URL": url, "PORCHLIGHT_DATA_DIR": str(data_dir)}
    env.pop("PORCHLIGHT_CONFIG", None)
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from porchlight.cli import main; sys.exit(main())",
            "server",
            "run",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    with serving(process, base):
        yield base, process.pid


def poll_cpu(meter: CpuMeter, count: int) -> tuple[float, float]:
    """(server, PostgreSQL) CPU milliseconds per poll since the meter was made."""
    server_s, database_s = meter.used()
    return server_s * 1000 / count, database_s * 1000 / count


class RssSampler:
    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self.baseline = rss_kib(pid)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_kib(self.pid))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth_mib(self) -> float:
        return max(0, self.peak - self.baseline) / 1024


def device_call(
    base: str, device: tuple[int, str, bytes], method: str, path: str, body: bytes = b""
) -> httpx.Response:
    device_id, credential, seed_bytes = device
    key = Ed25519PrivateKey.from_private_bytes(seed_bytes)
    headers = sign_device_call(key, device_id, credential, method, path, body)
    if body:
        headers["Content-Type"] = "application/json"
    return httpx.request(method, base + path, content=body, headers=headers, timeout=60)


def _connection(base: str) -> Any:
    import http.client
    from urllib.parse import urlsplit

    url = urlsplit(base)
    return http.client.HTTPConnection(url.hostname, url.port, timeout=600, blocksize=MIB)


def lean_put(base: str, path: str, headers: dict[str, str], source: Path) -> tuple[int, bytes]:
    """PUT a file in 1 MiB blocks with the standard library's HTTP client.

    The load generator shares the machine's two cores with the server: httpx's work per chunk
    would be taken from the server, so the transfer is timed with the leanest client loop.
    """
    connection = _connection(base)
    try:
        with source.open("rb") as body:
            connection.request("PUT", path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def lean_get(base: str, path: str, headers: dict[str, str]) -> tuple[int, str]:
    """GET a body into one reused 1 MiB buffer; returns (bytes, hex SHA-256)."""
    connection = _connection(base)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        assert response.status == 200, response.read()
        digest, count = hashlib.sha256(), 0
        buffer = memoryview(bytearray(MIB))
        while received := response.readinto(buffer):
            digest.update(buffer[:received])
            count += received
        return count, digest.hexdigest()
    finally:
        connection.close()


def transfer(
    base: str,
    pid: int,
    world: dict[str, Any],
    request_id: int,
    size_mib: int,
    work_dir: Path,
    repeat: int,
) -> dict[str, Any]:
    import json

    device = world["devices"][0]
    asks = device_call(base, device, "GET", "/api/device/asks").json()
    ask_id = asks[0]["ask_id"]
    ask_key = consent.new_ask_key()
    receipt = consent.make_receipt(
        ask_id,
        str(request_id),
        [f"bench-clip-{i}" for i in range(repeat)],
        ask_key,
        datetime.now(UTC),
    )
    device_key = Ed25519PrivateKey.from_private_bytes(device[2])
    body = json.dumps(consent.sign_receipt(receipt, device_key)).encode()
    answer = device_call(base, device, "POST", f"/api/device/asks/{ask_id}/consent", body)
    assert answer.status_code == 200, answer.text

    plain, sealed = work_dir / "clip.mp4", work_dir / "clip.age"
    with plain.open("wb") as out:
        for _ in range(size_mib):
            out.write(os.urandom(MIB))
    encrypt_file(plain, sealed, [parse_recipient(str(world["identity"].recipient()))])
    plain_sha = hashlib.sha256(plain.read_bytes()).hexdigest()
    plain.unlink()
    digest = hashlib.sha256()
    with sealed.open("rb") as handle:
        while block := handle.read(8 * MIB):
            digest.update(block)
    size = sealed.stat().st_size
    window_start = datetime.now(UTC) - timedelta(hours=2)
    from porchlight.manifest import sign_manifest

    requester = {"Authorization": f"Bearer {world['requester_token']}"}
    runs: list[tuple[float, float, float, float, float, float]] = []
    baseline = rss_kib(pid) / 1024

    def server_cpu() -> float:
        return sum(cpu_seconds(p) for p in process_tree(pid))

    for run in range(repeat):
        clip_id = f"bench-clip-{run}"
        manifest = ClipManifest(
            clip_id=clip_id,
            device_key=public_key_text(ask_key.public_key()),
            start=format_time(window_start),
            end=format_time(window_start + timedelta(seconds=30)),
            plaintext_sha256=plain_sha,
            ciphertext_sha256=digest.hexdigest(),
            ciphertext_size=size,
        )
        path = f"/api/device/asks/{ask_id}/clips/{clip_id}"
        headers = sign_device_call(
            device_key, device[0], device[1], "PUT", path, body_sha256=digest.hexdigest()
        )
        headers[consent.MANIFEST_HEADER] = consent.manifest_header(sign_manifest(manifest, ask_key))
        headers["Content-Type"] = "application/octet-stream"
        headers["Content-Length"] = str(size)
        os.sync()
        with RssSampler(pid) as up_rss:
            started, cpu_before = time.perf_counter(), server_cpu()
            status, answer = lean_put(base, path, headers, sealed)
            upload_s, upload_cpu = time.perf_counter() - started, server_cpu() - cpu_before
        assert status == 201, answer
        shared = httpx.get(f"{base}/api/requests/{request_id}/shared", headers=requester).json()
        (item,) = [x for x in shared if x["manifest"]["clip_id"] == clip_id]
        with RssSampler(pid) as down_rss:
            started, cpu_before = time.perf_counter(), server_cpu()
            count, received = lean_get(
                base, f"/api/requests/{request_id}/shared/{item['shared_clip_id']}", requester
            )
            download_s, download_cpu = time.perf_counter() - started, server_cpu() - cpu_before
        assert count == size and received == digest.hexdigest()
        runs.append(
            (upload_s, download_s, up_rss.growth_mib, down_rss.growth_mib, upload_cpu, download_cpu)
        )
        print(
            f"transfer {run + 1}/{repeat}: up {upload_s:.2f} s ({upload_cpu:.2f} s server CPU),"
            f" down {download_s:.2f} s ({download_cpu:.2f} s server CPU)",
            file=sys.stderr,
        )
    sealed.unlink()
    return {"size": size, "runs": runs, "rss_before": baseline}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--poll-seconds", type=float, default=15)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="server's")
    parser.add_argument("--processes", type=int, default=2, help="load generator processes")
    parser.add_argument("--connections", type=int, default=16, help="per load process")
    parser.add_argument("--poll-rate", type=float, default=1000, help="open-loop polls/s")
    parser.add_argument("--no-transfer", action="store_true", help="polls and fan-out only")
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--transfers", type=int, default=3, help="uploads+downloads to time")
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "PORCHLIGHT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        ),
    )
    args = parser.parse_args()

    with fresh_database(args.postgres) as url, tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        print(
            f"database {make_url(url).database}: migrating, seeding {args.devices} devices",
            file=sys.stderr,
        )
        upgrade(url)
        started = time.perf_counter()
        world = seed(url, args.devices)
        print(f"seeded in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        with server(url, work / "data", args.workers) as (base, pid):
            now = datetime.now(UTC)
            body = {
                "warrant": {
                    "court": "Benchshire Crown Court",
                    "docket_number": "B-1",
                    "judge": "J",
                    "issued_on": (now - timedelta(days=1)).date().isoformat(),
                    "expires_on": (now + timedelta(days=30)).date().isoformat(),
                    "document_sha256": hashlib.sha256(b"warrant").hexdigest(),
                },
                "offence": "bench",
                "window_start": (now - timedelta(hours=3)).isoformat(),
                "window_end": (now - timedelta(hours=1)).isoformat(),
                "area": {"lat": CENTRE[0], "lon": CENTRE[1], "radius_m": 500},
            }
            created = httpx.post(
                f"{base}/api/requests",
                json=body,
                headers={"Authorization": f"Bearer {world['requester_token']}"},
            ).json()
            started = time.perf_counter()
            opened = httpx.post(
                f"{base}/api/requests/{created['id']}/review",
                json={"decision": "approve", "reason": "bench"},
                headers={"Authorization": f"Bearer {world['reviewer_token']}"},
                timeout=120,
            )
            fan_out_s = time.perf_counter() - started
            assert opened.status_code == 200 and opened.json()["state"] == "open", opened.text
            engine = create_engine(url)
            with engine.connect() as connection:
                asks = connection.execute(text("SELECT count(*) FROM asks")).scalar_one()
            engine.dispose()
            print(f"fan-out: {asks} asks in {fan_out_s:.2f} s; first polls...", file=sys.stderr)
            port = int(base.rsplit(":", 1)[1])
            load = {"processes": args.processes, "connections": args.connections}
            poll_runs = []
            for label, options in (
                ("first poll (logs delivery)", {"each_once": True}),
                ("steady polls, closed loop", {"seconds": args.poll_seconds}),
                (
                    f"steady polls, open loop at {args.poll_rate:,.0f}/s",
                    {"seconds": args.poll_seconds, "rate": args.poll_rate},
                ),
            ):
                meter = CpuMeter(pid, url)
                result = poll_load.run("127.0.0.1", port, world["devices"], **load, **options)
                poll_runs.append((label, result, poll_cpu(meter, result.count)))
                print(f"{label}: {result.rate:,.0f} polls/s", file=sys.stderr)
            if not args.no_transfer:
                print("transfer...", file=sys.stderr)
                moved = transfer(
                    base, pid, world, created["id"], args.size_mib, work, args.transfers
                )

    print(
        f"\nserver: `porchlight server run --workers {args.workers}`, PostgreSQL, "
        f"{args.devices} devices; load: {args.processes} processes x {args.connections} "
        "keep-alive connections (bench/poll_load.py)\n"
    )
    print("| measure | result | target |")
    print("|---|---:|---:|")
    print(f"| fan-out: approve -> {asks} asks, request open | {fan_out_s:.2f} s | < 2 s |")
    for label, result, (server_ms, database_ms) in poll_runs:
        due = (
            f", p99 from due time {result.due_p99_ms:.1f} ms"
            if result.due_p99_ms is not None
            else ""
        )
        late = f", {result.signed_late} signed late" if result.signed_late else ""
        print(
            f"| {label}: {result.count} polls | {result.rate:,.0f} polls/s, p50 "
            f"{result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms{due}; CPU per poll: server "
            f"{server_ms:.2f} ms + PostgreSQL {database_ms:.2f} ms (load generator "
            f"{result.cpu_seconds * 1000 / max(1, result.count):.2f} ms){late} "
            # The target is for the steady poll; a first delivery happens once per ask.
            f"| {'' if label.startswith('first') else '>= 1,000/s, p99 < 50 ms'} |"
        )
    if not args.no_transfer:
        mb = moved["size"] / 1e6
        runs = moved["runs"]
        for label, column in (("upload", 0), ("download", 1)):
            rates = sorted(mb / run[column] for run in runs)
            growth = max(run[column + 2] for run in runs)
            # Server CPU (user + system, every worker) per GiB moved, median of the runs.
            cpu = statistics.median(run[column + 4] for run in runs) * GIB / moved["size"]
            print(
                f"| {label} {mb:,.0f} MB, best of {len(runs)} (median) | {rates[-1]:,.0f} "
                f"({statistics.median(rates):,.0f}) MB/s, RSS +{growth:.1f} MiB at most; "
                f"server CPU {cpu:.2f} s per GiB | >= 300 MB/s, < 50 MiB |"
            )
        print(f"\nserver RSS before the transfer: {moved['rss_before']:.0f} MiB")
    print(
        f"load average at the end (1/5/15 min): {' / '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )


if __name__ == "__main__":
    main()
