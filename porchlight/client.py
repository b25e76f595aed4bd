"""The Porchlight HTTP API client (httpx), shared by the CLI and the device agent.

Device calls are signed so a captured request cannot be replayed or altered (DESIGN "Bad input
and faults"). A signed call carries four headers besides `Authorization: Device <credential>`:

    X-Porchlight-Device:    the device id (decimal)
    X-Porchlight-Timestamp: Unix seconds (decimal); the server allows a small clock skew
    X-Porchlight-Nonce:     32 lower-case hex characters, never reused within the skew window
    X-Porchlight-Signature: base64 Ed25519 signature over `device_signing_message(...)`

The signed message is the UTF-8 text, lines joined by "\\n":

    porchlight-device-call-v1
    <METHOD upper case>
    <path, with "?query" if any, exactly as sent>
    <timestamp>
    <nonce>
    <hex SHA-256 of the body bytes (of b"" when there is none)>
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import secrets
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO, TextIO
from urllib.parse import urlsplit

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from porchlight.age.pipeline import write_all
from porchlight.text import shown

SIGNING_CONTEXT = "porchlight-device-call-v1"
DEVICE_HEADER = "X-Porchlight-Device"
TIMESTAMP_HEADER = "X-Porchlight-Timestamp"
NONCE_HEADER = "X-Porchlight-Nonce"
SIGNATURE_HEADER = "X-Porchlight-Signature"


class ApiError(Exception):
    """The server refused a call; `message` is its explanation."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(f"{status_code}: {message}")
        self.status_code = status_code
        self.message = message


class ResponseError(ValueError):
    """The server's answer was not what the API promises (e.g. a 200 that is not JSON)."""


# The one opt-in name every command taking a server URL uses (request, audit, device).
ALLOW_HTTP_FLAG = "--allow-http"


class ServerURLError(ValueError):
    """A server URL the client will not use; the message is one line saying why and what to do."""


def is_loopback_host(host: str) -> bool:
    """Whether `host` is this machine by name or address: localhost, 127.0.0.0/8 or ::1."""
    host = host.rstrip(".").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate_server_url(url: str, *, allow_http: bool = False) -> str:
    """Check a server URL before anything is sent to it; returns it unchanged.

    Every call carries a secret (an API token, a password, a device credential), so plain
    http:// is refused unless the host is this machine (nothing crosses a network) or the
    caller opted in with `allow_http` (the ALLOW_HTTP_FLAG of the command line) for a
    network it trusts.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as error:
        raise ServerURLError(f"server {url!r} is not a valid URL: {error}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ServerURLError(f"server {url!r} is not an http(s) URL")
    if not host:
        raise ServerURLError(f"server {url!r} names no host")
    if scheme == "http" and not allow_http and not is_loopback_host(host):
        raise ServerURLError(
            f"refusing plain http:// to {host}, which is not this machine: the token or "
            "credential would cross the network unencrypted; use https://, or pass "
            f"{ALLOW_HTTP_FLAG} if you trust the network to it"
        )
    return url


def device_signing_message(
    method: str,
    path: str,
    timestamp: str,
    nonce: str,
    body: bytes = b"",
    *,
    body_sha256: str | None = None,
) -> bytes:
    """The bytes a device signs. Give `body_sha256` (hex) instead of `body` for a streamed body."""
    digest = body_sha256 if body_sha256 is not None else hashlib.sha256(body).hexdigest()
    return "\n".join(
        [SIGNING_CONTEXT, method.upper(), path, timestamp, nonce, digest.lower()]
    ).encode("utf-8")


def sign_device_call(
    private_key: Ed25519PrivateKey,
    device_id: int,
    credential: str,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    timestamp: int | None = None,
    nonce: str | None = None,
    body_sha256: str | None = None,
) -> dict[str, str]:
    """The headers that authenticate one device call (`body_sha256` for a streamed file)."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    nonce = nonce or secrets.token_hex(16)
    signature = private_key.sign(
        device_signing_message(method, path, stamp, nonce, body, body_sha256=body_sha256)
    )
    return {
        "Authorization": f"Device {credential}",
        DEVICE_HEADER: str(device_id),
        TIMESTAMP_HEADER: stamp,
        NONCE_HEADER: nonce,
        SIGNATURE_HEADER: base64.b64encode(signature).decode("ascii"),
    }


def raw_public_key(private_key: Ed25519PrivateKey) -> bytes:
    return private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class Enrolment:
    device_id: int
    credential: str


def _message(response: httpx.Response) -> str:
    """The server's explanation of a refusal, escaped: every CLI prints it, and a terminal
    would obey its ESC sequences or bidi controls (porchlight/text.py)."""
    try:
        body = response.json()
    except ValueError:
        return shown(response.text[:200] or response.reason_phrase)
    message = body.get("message") if isinstance(body, dict) else None
    if isinstance(message, str):
        return shown(message)
    return shown(str(body)[:200])


class PorchlightClient:
    """A thin client: JSON in, JSON out, ApiError for any refusal.

    `base_url` must pass `validate_server_url` (ServerURLError otherwise), unless a custom
    `transport` is given: that one (an in-process app in tests) crosses no network.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
        allow_http: bool = False,
    ) -> None:
        if transport is None:
            validate_server_url(base_url, allow_http=allow_http)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(
            base_url=base_url.rstrip("/"), headers=headers, transport=transport, timeout=timeout
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> PorchlightClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _check(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            raise ApiError(response.status_code, _message(response))
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            # A proxy's or captive portal's HTML page, or the wrong URL altogether.
            kind = response.headers.get("Content-Type", "unknown type")
            raise ResponseError(
                f"HTTP {response.status_code} with a body that is not JSON ({kind})"
            ) from None

    def get(self, path: str, **params: Any) -> Any:
        return self._check(self.http.get(path, params=params or None))

    def post(self, path: str, body: Mapping[str, Any]) -> Any:
        return self._check(self.http.post(path, json=dict(body)))

    def create_token(self, username: str, password: str, name: str) -> str:
        """Sign in with a password and create an API token (shown once) for later calls."""
        login = self.post("/api/session", {"username": username, "password": password})
        response = self.http.post(
            "/api/tokens", json={"name": name}, headers={"X-CSRF-Token": login["csrf_token"]}
        )
        created = self._check(response)
        self._check(self.http.delete("/api/session", headers={"X-CSRF-Token": login["csrf_token"]}))
        self.http.cookies.clear()
        return str(created["token"])

    def use_token(self, token: str) -> None:
        self.http.headers["Authorization"] = f"Bearer {token}"

    def enroll_device(self, code: str, private_key: Ed25519PrivateKey, name: str) -> Enrolment:
        """Register this device's Ed25519 public key with a one-time enrolment code."""
        body = self.post(
            "/api/devices/enroll",
            {
                "code": code,
                "public_key": base64.b64encode(raw_public_key(private_key)).decode("ascii"),
                "name": name,
            },
        )
        return Enrolment(device_id=int(body["device_id"]), credential=str(body["credential"]))

    def device_call(
        self,
        private_key: Ed25519PrivateKey,
        enrolment: Enrolment,
        method: str,
        path: str,
        body: bytes = b"",
        content_type: str = "application/json",
    ) -> Any:
        """A signed device call; `path` may include a query string."""
        headers = sign_device_call(
            private_key, enrolment.device_id, enrolment.credential, method, path, body
        )
        if body:
            headers["Content-Type"] = content_type
        return self._check(self.http.request(method, path, content=body, headers=headers))

    # -- footage requests (docs/requests-api.md) -------------------------------------------
    def call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """A Bearer-authenticated JSON call of any method; ApiError for any refusal."""
        if body is None:
            return self._check(self.http.request(method, path))
        return self._check(self.http.request(method, path, json=dict(body)))

    def download(
        self,
        path: str,
        dst: BinaryIO,
        progress: Callable[[int, int | None], None] | None = None,
    ) -> tuple[int, str]:
        """Stream a GET body into ``dst``; returns (bytes written, hex SHA-256 of them)."""
        digest = hashlib.sha256()
        written = 0
        with self.http.stream("GET", path) as response:
            if response.status_code >= 400:
                response.read()
                raise ApiError(response.status_code, _message(response))
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            # As the network stream delivers them: re-cutting them into fixed sizes costs more
            # CPU than receiving (httpx joins and slices every piece).
            for chunk in response.iter_bytes():
                write_all(dst, chunk)
                digest.update(chunk)
                written += len(chunk)
                if progress is not None:
                    progress(written, total)
        return written, digest.hexdigest()

    def device_upload(
        self,
        private_key: Ed25519PrivateKey,
        enrolment: Enrolment,
        path: str,
        src: BinaryIO,
        size: int,
        body_sha256: str,
        headers: Mapping[str, str] | None = None,
        progress: Callable[[int, int | None], None] | None = None,
    ) -> Any:
        """A signed device PUT whose body is streamed from ``src`` (``size`` bytes, hashed
        beforehand): the signature covers ``body_sha256`` so the file is never held in memory."""
        signed = sign_device_call(
            private_key,
            enrolment.device_id,
            enrolment.credential,
            "PUT",
            path,
            body_sha256=body_sha256,
        )
        sent = 0

        def chunks() -> Iterator[bytes]:
            nonlocal sent
            while block := src.read(TRANSFER_CHUNK):
                sent += len(block)
                if progress is not None:
                    progress(sent, size)
                yield block

        all_headers = {
            **signed,
            **(headers or {}),
            "Content-Type": "application/octet-stream",
            "Content-Length": str(size),
        }
        return self._check(self.http.request("PUT", path, content=chunks(), headers=all_headers))


TRANSFER_CHUNK = 1 << 20


class ProgressBar:
    """A one-line transfer progress bar on stderr (only when stderr is a terminal or forced)."""

    def __init__(self, label: str, *, stream: TextIO | None = None, force: bool = False) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = force or self.stream.isatty()
        self._shown = -1
        self._started = time.monotonic()

    def __call__(self, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        if total:
            percent = min(100, done * 100 // total)
            if percent == self._shown:
                return
            self._shown = percent
            filled = percent // 4
            bar = "#" * filled + "-" * (25 - filled)
            text = f"{self.label} [{bar}] {percent:3d}% {done / 1e6:8.1f} MB"
        else:
            text = f"{self.label} {done / 1e6:8.1f} MB"
        print(f"\r{text}", end="", file=self.stream, flush=True)

    def finish(self, done: int) -> None:
        if not self.enabled:
            return
        seconds = max(time.monotonic() - self._started, 1e-6)
        print(
            f"\r{self.label} {done / 1e6:8.1f} MB in {seconds:.1f} s "
            f"({done / 1e6 / seconds:.1f} MB/s)" + " " * 20,
            file=self.stream,
            flush=True,
        )
