"""Security headers on every response: a strict CSP (no inline script or style), no framing,
no referrer, no MIME sniffing, and no powerful browser features; and `Cache-Control: no-store`
on every answer to a caller who proved who they are."""

from __future__ import annotations

from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.deps import SESSION_COOKIE

# No 'unsafe-inline' anywhere: pages use only /static files; SVG charts use presentation
# attributes, which CSP does not treat as inline style.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "font-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
HEADERS: list[tuple[bytes, bytes]] = [
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (
        b"permissions-policy",
        b"camera=(), microphone=(), geolocation=(), payment=(), usb=(), interest-cohort=()",
    ),
    (b"cross-origin-opener-policy", b"same-origin"),
]
# A signed-in person's or a device's answer (warrant details, shared-clip listings, clips, asks)
# is for them alone: no browser history, back-forward cache, proxy or CDN may keep a copy.
NO_STORE = (b"cache-control", b"no-store")
# Request headers that carry a credential: an API token, or a device's signed call
# (porchlight/client.py).
_CREDENTIAL_HEADERS = frozenset({b"authorization", b"x-porchlight-device"})


def _authenticated(scope: Scope) -> bool:
    """Whether the request carried a credential (valid or not: a refusal is not cached either)."""
    for name, value in scope.get("headers", []):
        lowered = name.lower()
        if lowered in _CREDENTIAL_HEADERS:
            return True
        if lowered == b"cookie" and SESSION_COOKIE in cookie_parser(value.decode("latin-1")):
            return True
    return False


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        private = _authenticated(scope)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in HEADERS if h[0] not in present)
                if b"content-security-policy" not in present:
                    headers.append(
                        (b"content-security-policy", CONTENT_SECURITY_POLICY.encode("ascii"))
                    )
                # A route that chose its own caching keeps it (the log's checkpoint and tiles,
                # the auditors' private entry bundles); a response setting a cookie (a new
                # session) is private too.
                if b"cache-control" not in present and (private or b"set-cookie" in present):
                    headers.append(NO_STORE)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
