"""A server- and client-side HTTP/1.1 connection layer on asyncio streams,
parsed with ``httptools`` (llhttp).

It knows nothing of the proxy or the gateway: the server side turns a
connection's bytes into ``Request`` objects and hands each to an async
handler with a ``Responder``; the client side keeps a pool of keep-alive
connections per origin.  The compliance proxy serves its decrypted
(bumped) flows with it; the gateway's ``/v1`` hot path can move onto it
(issue 17).
"""

from ingress.http1.client import ClientPool, ClientResponse, ConnectError, Connector, Origin
from ingress.http1.message import Headers, Request
from ingress.http1.server import Handler, Limits, Responder, Served, serve_connection

__all__ = [
    "ClientPool",
    "ClientResponse",
    "ConnectError",
    "Connector",
    "Handler",
    "Headers",
    "Limits",
    "Origin",
    "Request",
    "Responder",
    "Served",
    "serve_connection",
]
