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
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

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
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    message = body.get("message") if isinstance(body, dict) else None
    if isinstance(message, str):
        return message
    return str(body)[:200]


class PorchlightClient:
    """A thin client: JSON in, JSON out, ApiError for any refusal."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
    ) -> None:
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
        return response.json() if response.content else None

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
