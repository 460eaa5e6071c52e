"""The security checks of `pyramidal serve`, and its errors as JSON.

The server answers only requests addressed to it by a name or address it listens on (the Host header): a page
of another site that points its own name at 127.0.0.1 (DNS rebinding) gets 400, so it can neither queue jobs
nor read their results. Posts from another site's page get 403, bodies over the upload limit 413, and every
answer carries headers that let the page load nothing from anywhere but this server. Every error is JSON,
{"error": message}.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.responses import JSONResponse

from pyramidal.web.settings import LOCAL_HOSTS

# Headers on every response: the page loads nothing from anywhere but this server.
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' blob: data:; style-src 'self'; "
                                 b"script-src 'self'; connect-src 'self'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


class HTTPError(Exception):
    """An error answered as JSON {"error": message} with `status`."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def json_error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    """The answer to an error: {"error": message} with `status`."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def shown(value: Any) -> str:
    """A form value fit for a message: printable, at most 40 characters, quoted."""
    text = "".join(c for c in str(value) if c.isprintable())
    return repr(text[:40] + ("…" if len(text) > 40 else ""))


def _same_origin(headers: dict[bytes, bytes]) -> bool:
    """True unless the browser says the request comes from a page of another origin than this server."""
    origin = headers.get(b"origin")
    if origin is None:
        return True  # not sent by a browser page (curl, scripts, same-origin navigation in some browsers)
    return origin.split(b"://", 1)[-1] == headers.get(b"host", b"")


def host_name(value: str) -> str:
    """The name in a Host header (or a --host), lower case, without port, brackets or a final dot:
    "LocalHost:7860" → "localhost", "[::1]:7860" → "::1"."""
    text = value.strip().lower()
    if text.startswith("["):
        text = text[1:text.find("]")] if "]" in text else text[1:]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    return text.rstrip(".")


class Guard:
    """ASGI middleware: requests for another host name refused (400), cross-site posts refused (403), request-size
    limit (413), security headers on every answer."""

    def __init__(self, app: Any, max_bytes: int, hosts: Sequence[str] = LOCAL_HOSTS):
        self.app, self.max_bytes = app, max_bytes
        self.hosts = {host_name(h) for h in hosts}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_with_headers(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        headers = dict(scope.get("headers", []))
        host = headers.get(b"host", b"").decode("latin-1")
        if host_name(host) not in self.hosts:
            # A name this server does not listen on: another site's page reaching it through its own DNS name.
            refused = HTTPError(400, f"this server answers requests for {', '.join(sorted(self.hosts))} only, "
                                     f"not {shown(host) if host else 'a request without a Host header'}")
            await self._answer(refused, scope, receive, send_with_headers)
            return
        if scope["method"] == "POST" and not _same_origin(headers):
            # Another site's page may make the browser post here, though it cannot read the answer.
            await self._answer(HTTPError(403, "cross-site request refused"), scope, receive, send_with_headers)
            return
        too_large = HTTPError(413, f"the upload is over the limit of {self.max_bytes / 2**20:.3g} MB")
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._answer(too_large, scope, receive, send_with_headers)
            return
        received = 0

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise too_large
            return message

        try:
            await self.app(scope, limited_receive, send_with_headers)
        except HTTPError as exc:
            if started:
                raise
            await self._answer(exc, scope, receive, send_with_headers)

    @staticmethod
    async def _answer(exc: HTTPError, scope: dict, receive: Any, send: Any) -> None:
        await json_error(exc.status, exc.message, exc.headers)(scope, receive, send)

