"""One client connection: aiohttp's HTTP/1.1 protocol with three changes.

- **A deadline on the request head** (``gateway.header_timeout_s``): aiohttp
  waits for a request's headers as long as the client keeps sending, so 200
  sockets dribbling a header line a second held 200 connections for as long
  as the attacker liked.  The clock starts when a connection opens, or when
  the first byte of the next request arrives on a kept-alive one (an idle
  keep-alive connection is the keep-alive timeout's business); a head not
  complete by then gets a 408 and the connection is closed.
- **Errors the parser raises are answered in JSON**, in the caller's format,
  in our words: aiohttp's plain-text answers quoted the offending bytes
  back (a header, a chunk of the body, the prompt with it).
- **No version in ``Server``**: aiohttp announced itself and its version.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler

from ingress.pipeline.errors import caller_grammar
from ingress.translate.grammar import Failure, Grammar

SERVER = "nexus"
# Idle keep-alive connections are closed after this long (aiohttp's default
# is an hour): longer than any client pool keeps one (httpx 5 s, aiohttp
# 15 s), so a client never sends on a connection we have just closed.
KEEPALIVE_TIMEOUT_S = 75.0
# The start of a request head, kept to answer an error about it in the
# caller's format (its path, and whether it sends anthropic-version).
_HEAD_SAMPLE = 2048


class GatewayConnection(RequestHandler):
    __slots__ = (
        "_armed_at_count",
        "_awaiting_head",
        "_head",
        "_head_deadline",
        "_header_timeout_s",
        "_last_head",
    )

    def __init__(self, manager: web.Server, *, header_timeout_s: float, **kw: Any) -> None:
        super().__init__(manager, **kw)
        self._header_timeout_s = header_timeout_s
        self._head_deadline: asyncio.TimerHandle | None = None
        self._awaiting_head = False
        self._armed_at_count = 0
        self._head = b""  # the start of the head being received
        self._last_head = b""  # ... and of the last one parsed (or refused)

    # --- the request-head deadline ------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if not self._awaiting_head:
            # Waiting for the next request (start() awaits its waiter): these
            # bytes begin a request head.  (Otherwise they are a body.)
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                self._arm()
        if self._awaiting_head and not self._head:
            self._head = data[:_HEAD_SAMPLE]
        count = self._request_count
        super().data_received(data)
        if self._request_count != count:  # a whole head (or a parse error) arrived
            self._awaiting_head = False
            self._last_head, self._head = self._head, b""
            if self._head_deadline is not None:
                self._head_deadline.cancel()
                self._head_deadline = None

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._awaiting_head = True
        if self._header_timeout_s <= 0:
            return
        self._armed_at_count = self._request_count
        self._head_deadline = self._loop.call_later(self._header_timeout_s, self._head_overdue)

    def _head_overdue(self) -> None:
        self._head_deadline = None
        transport = self.transport
        if transport is None or self._request_count != self._armed_at_count:
            return
        failure = Failure(
            408, "invalid_request_error", "request_timeout", "The request headers did not arrive in time."
        )
        body = _grammar(self._head).error_body(failure)
        transport.write(
            b"HTTP/1.1 408 Request Timeout\r\nServer: " + SERVER.encode() + b"\r\n"
            b"Content-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        self.force_close()

    # --- parser errors ----------------------------------------------------------------

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """What aiohttp answers itself: a request it could not parse (400)
        or, never on our routes (the middleware answers those), a handler
        that raised (500) or timed out (504)."""
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send an error")
        if isinstance(exc, LineTooLong) or (
            isinstance(exc, BadHttpMessage) and "Too many headers" in str(exc.message)
        ):
            failure = Failure(
                431,
                "invalid_request_error",
                "request_header_too_large",
                "The request line or headers exceed the gateway's limits (8,190 bytes a line, 128 headers).",
            )
        elif status == 400:
            failure = Failure(
                400, "invalid_request_error", "malformed_http", "The HTTP request could not be parsed."
            )
        elif status == 504:
            failure = Failure(504, "api_error", "timeout", "The gateway timed out serving the request.")
        else:
            failure = Failure(500, "server_error", "internal_error", "The gateway hit an unexpected error.")
        if exc is not None and status >= 500:
            self.log_exception("error serving a request", exc_info=exc)
        grammar = caller_grammar(request.path) if request.path != "/" else _grammar(self._last_head)
        resp = web.Response(
            status=failure.status,
            body=grammar.error_body(failure),
            content_type="application/json",
            headers={"Server": SERVER, "Connection": "close"},
        )
        resp.force_close()
        return resp


def _grammar(head: bytes) -> Grammar:
    # "POST /v1/messages HTTP/1.1": the path, if the request line got that far.
    parts = head.split(b" ", 2)
    path = parts[1].decode("latin-1").split("?", 1)[0] if len(parts) > 2 else "/"
    return caller_grammar(path, b"\nanthropic-version:" in head.lower())
