"""Refuse oversized JSON and form bodies (413) before anything parses them.

Counts bytes as they arrive, so a missing or lying Content-Length does not get past it.
Streamed uploads (other content types) are limited by their own routes.

Before answering, the rest of a refused body is read and dropped, up to DRAIN_BYTES: a
client, or a reverse proxy such as nginx, that is still sending when the server closes the
connection gets a broken pipe, and the proxy then answers 502 instead of passing the 413 and
its message on. A body far beyond that is cut off unread, as before.
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LIMITED_TYPES = (b"application/json", b"application/x-www-form-urlencoded", b"multipart/form-data")
# How much of a refused body is read and dropped before the 413 goes out.
DRAIN_BYTES = 16 * 1024 * 1024


class _TooLarge(HTTPException):
    """Raised from the app's `receive`. An HTTPException, because FastAPI passes one raised
    while it reads the body on unchanged (any other error becomes a 400 "error parsing the
    body"), so the app's error handler renders the 413: JSON, or a page for a browser."""


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if content_type not in LIMITED_TYPES:
            await self.app(scope, receive, send)
            return
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            await _drain(receive)
            await self._refuse(send)
            return
        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    if message.get("more_body", False):
                        await _drain(receive)
                    raise _TooLarge(413, self._message())
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            # Only if no error handler answered it (the body was drained when it was raised).
            if not response_started:
                await self._refuse(send)

    def _message(self) -> str:
        return f"request body larger than {self.max_bytes} bytes"

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"error": "payload_too_large", "message": self._message()}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


async def _drain(receive: Receive) -> None:
    """Read and drop what is left of the request body, up to DRAIN_BYTES."""
    drained = 0
    while drained <= DRAIN_BYTES:
        message = await receive()
        if message["type"] != "http.request":
            return  # the client went away
        drained += len(message.get("body", b""))
        if not message.get("more_body", False):
            return
