"""The fuzz cases: seeded, so a failure is replayed with its seed
(``NEXUS_FUZZ_SEED``).  Each endpoint gets a systematic part (every field
of every template given every wrong type, or taken away) and a random part
(bad JSON, bad UTF-8, deep nesting, huge numbers, broken framing, odd and
oversized headers, odd methods), interleaved; a case is the whole request
as bytes on the wire."""

from __future__ import annotations

import copy
import gzip
import json
import random
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tests.fuzz.corpus import CANARY, Endpoint


@dataclass(frozen=True)
class Case:
    kind: str  # the mutation family (reported, and the unit of failure counts)
    data: bytes  # the request as sent
    anthropic: bool  # the grammar its errors must be in
    # Framing cases go on a fresh connection that is closed after the first
    # answer (what follows may be garbage the server reads as a next request).
    fresh: bool = False
    half_close: bool = False  # shut our sending side once the bytes are out
    head: bool = False  # a HEAD request: the answer has no body
    path_known: bool = True  # the request line is intact enough to pick the grammar by path


# Values of every JSON type, and the ones that broke parsers before.
WRONG: tuple[Any, ...] = (
    None,
    True,
    0,
    -1,
    1.5,
    10**30,
    2**63,
    "",
    CANARY,
    f"\u0000{CANARY}",
    [],
    [CANARY],
    {},
    {"type": CANARY},
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path into ``value``: the keys of objects, the items of arrays."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield (*prefix, k)
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield (*prefix, i)
            yield from _paths(v, (*prefix, i))


def _set(body: Any, path: tuple[Any, ...], value: Any) -> Any:
    out = copy.deepcopy(body)
    node = out
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return out


def _drop(body: Any, path: tuple[Any, ...]) -> Any:
    out = copy.deepcopy(body)
    node = out
    for p in path[:-1]:
        node = node[p]
    del node[path[-1]]
    return out


def _model_safe(path: tuple[Any, ...], value: Any) -> Any:
    # A model name is shown back in "model not found" (as OpenAI does): the
    # canary goes everywhere else.
    if path and path[-1] == "model" and isinstance(value, str) and CANARY in value:
        return value.replace(CANARY, "no-such-model")
    return value


class Builder:
    """Requests for one endpoint: headers, auth, framing."""

    def __init__(self, ep: Endpoint, key: str) -> None:
        self.ep = ep
        self.key = key

    def auth(self) -> dict[str, str]:
        if self.ep.anthropic:
            return {"x-api-key": self.key}
        return {"Authorization": f"Bearer {self.key}"}

    def request(
        self,
        body: bytes = b"",
        *,
        method: str | None = None,
        path: str | None = None,
        headers: dict[str, str] | None = None,
        auth: bool = True,
        version: str = "HTTP/1.1",
        length: bool = True,
    ) -> bytes:
        method = method or self.ep.method
        h: dict[str, str] = {"Host": "gateway", **self.ep.extra_headers}
        if auth:
            h.update(self.auth())
        if body or method in ("POST", "PUT", "PATCH"):
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        if length and not any(k.lower() in ("content-length", "transfer-encoding") for k in h):
            h["Content-Length"] = str(len(body))
        head = f"{method} {path or self.ep.path} {version}\r\n"
        raw = head.encode() + b"".join(
            k.encode("latin-1") + b": " + v.encode("utf-8", "surrogateescape") + b"\r\n" for k, v in h.items()
        )
        return raw + b"\r\n" + body

    def case(self, kind: str, data: bytes, **kw: Any) -> Case:
        return Case(kind, data, self.ep.anthropic, **kw)


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def systematic(ep: Endpoint, b: Builder) -> Iterator[Case]:
    """Every field of every template: each wrong value, and missing."""
    for template in ep.templates:
        yield b.case("valid", b.request(_json(template)))
        for path in _paths(template):
            yield b.case("missing_field", b.request(_json(_drop(template, path))))
            for wrong in WRONG:
                yield b.case("wrong_type", b.request(_json(_set(template, path, _model_safe(path, wrong)))))


def _nested(template: Any, depth: int, rng: random.Random) -> bytes:
    """``template`` with one of its values replaced by ``depth`` levels of
    arrays and objects (written as text: the encoder would overflow too)."""
    opens = [rng.choice([b"[", b'{"n":']) for _ in range(depth)]
    closes = [b"]" if o == b"[" else b"}" for o in reversed(opens)]
    nest = b"".join(opens) + _json(CANARY) + b"".join(closes)
    marker = "__FUZZ_NEST__"
    path = rng.choice(list(_paths(template)))
    return _json(_set(template, path, marker)).replace(f'"{marker}"'.encode(), nest)


def _bad_json(raw: bytes, rng: random.Random) -> bytes:
    match rng.randrange(7):
        case 0:
            return raw[: rng.randrange(len(raw))]
        case 1:
            i = rng.randrange(len(raw))
            return raw[:i] + bytes([rng.randrange(256)]) + raw[i + 1 :]
        case 2:
            return raw + rng.choice([b"}", b"]", b",", b" garbage", b"\x00", b"{}"])
        case 3:
            return rng.choice(
                [b"", b"null", b"[]", b"1", b'"str"', b"true", b"{", b"{}", b"[{}]", b"\xef\xbb\xbf{}"]
            )
        case 4:
            i = rng.randrange(len(raw))
            return raw[:i] + raw[i + 1 :]
        case 5:
            return raw.replace(b":", b"=", 1)
        case _:
            return raw.replace(b'"', b"'", 2)


def _bad_utf8(raw: bytes, rng: random.Random) -> bytes:
    bad = rng.choice(
        [b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\xf8\x88\x80\x80\x80", b"\x80", b"\xfe\xfe"]
    )
    target = CANARY.encode()
    i = raw.find(target)
    if i < 0:
        return raw + bad
    j = i + rng.randrange(len(target))
    return raw[:j] + bad + raw[j:]


def _escapes(template: Any, rng: random.Random) -> bytes:
    """Valid JSON whose strings are not valid text: lone surrogates, NULs,
    control characters, noncharacters."""
    raw = _json(template).decode()
    esc = rng.choice(
        ["\\ud800", "\\udfff", "\\ud83d", "\\u0000", "\\u001b[31m", "\\uffff", "\\u202e", "\\ud800\\u0000"]
    )
    return raw.replace(CANARY, CANARY + esc, rng.randrange(1, 4)).encode()


def _huge_number(template: Any, rng: random.Random) -> bytes:
    paths = [p for p in _paths(template)]
    path = rng.choice(paths)
    token = rng.choice(
        [
            "1e309",
            "-1e309",
            "1e-400",
            "1" + "0" * 5000,
            "-" + "9" * 400,
            "0." + "0" * 400 + "1",
            "1E400",
            "123456789012345678901234567890.5",
        ]
    )
    marker = "__FUZZ_NUMBER__"
    return _json(_set(template, path, marker)).replace(f'"{marker}"'.encode(), token.encode())


def _headers_case(ep: Endpoint, b: Builder, body: bytes, rng: random.Random) -> Case:
    choice = rng.randrange(22)
    auth = True
    headers: dict[str, str] = {}
    kind = "odd_header"
    fresh = False
    if choice == 0:
        auth, kind = False, "no_key"
    elif choice == 1:
        auth, headers, kind = False, {"Authorization": f"Bearer nvk_{CANARY}"}, "bad_key"
    elif choice == 2:
        auth, headers, kind = False, {"x-api-key": CANARY, "Authorization": f"Basic {CANARY}"}, "bad_key"
    elif choice == 3:
        headers = {"X-Fuzz": CANARY, "User-Agent": f"fuzz {CANARY}", "Referer": CANARY}
    elif choice == 4:
        headers = {
            "Content-Type": rng.choice(
                [
                    "text/plain",
                    "multipart/form-data; boundary=x",
                    "application/json; charset=latin-1",
                    "",
                    "*/*",
                ]
            )
        }
    elif choice == 5:
        headers = {"Accept": "text/html", "X-Fuzz": CANARY}
    elif choice == 6:
        headers = {"x-nexus-virtual-key": CANARY, "x-nexus-request-id": CANARY, "traceparent": CANARY}
    elif choice == 7:
        headers = {"anthropic-version": CANARY, "anthropic-beta": CANARY, "OpenAI-Organization": CANARY}
    elif choice == 8:
        headers = {"X-Pad": CANARY * (9000 // len(CANARY))}  # over the 8,190-byte line limit
        kind, fresh = "oversized_header", True
    elif choice == 9:
        headers = {f"X-H{i}": CANARY for i in range(150)}  # over the 128-header limit
        kind, fresh = "oversized_header", True
    elif choice == 10:
        headers = {"X-Fuzz": CANARY + "\udcff\udcfe"}  # bytes that are not text
    elif choice == 11:
        headers = {"Expect": "100-continue"}
    elif choice == 12:
        headers = {"Connection": "Upgrade", "Upgrade": rng.choice(["websocket", "h2c", CANARY])}
        fresh = True
    elif choice == 13:
        headers = {"Connection": "close"}
        fresh = True
    elif choice == 14:
        headers = {"Host": CANARY}
    elif choice == 15:
        headers = {"x-nexus-cache": CANARY, "x-nexus-cache-ttl": "-1", "x-nexus-trace-id": CANARY}
    elif choice == 16:
        headers = {"Authorization": f"Bearer {b.key}", "x-api-key": f"sk-{CANARY}"}
        auth = False
    elif choice == 17:
        headers = {"Cookie": f"session={CANARY}", "Forwarded": f"for={CANARY}", "X-Forwarded-For": CANARY}
    elif choice == 18:
        headers = {"Content-Type": "application/json", "content-type": "text/plain"}
    elif choice == 19:
        headers = {"Accept-Encoding": "gzip, br, zstd", "TE": "trailers"}
    elif choice == 20:
        headers = {"X-Fuzz": "a" * 8000}
    else:
        headers = {"Keep-Alive": "timeout=1", "Via": CANARY}
    return b.case(kind, b.request(body, headers=headers, auth=auth), fresh=fresh)


def _framing_case(ep: Endpoint, b: Builder, body: bytes, rng: random.Random) -> Case:
    choice = rng.randrange(21)
    h = b.request  # shorthand
    if choice == 0:
        return b.case(
            "content_encoding", h(b"not gzip " + body, headers={"Content-Encoding": "gzip"}), fresh=True
        )
    if choice == 1:
        return b.case("content_encoding", h(gzip.compress(body), headers={"Content-Encoding": "gzip"}))
    if choice == 2:
        return b.case("content_encoding", h(zlib.compress(body), headers={"Content-Encoding": "deflate"}))
    if choice == 3:
        enc = rng.choice(["br", "zstd", "compress", "x-unknown", "gzip, gzip", "identity", CANARY])
        return b.case("content_encoding", h(body, headers={"Content-Encoding": enc}), fresh=True)
    if choice == 4:  # a gzip bomb: 4 MB of zeros in a few KB
        bomb = gzip.compress(b'{"model": "' + b"0" * (4 * 1024 * 1024) + b'"}')
        return b.case("content_encoding", h(bomb, headers={"Content-Encoding": "gzip"}), fresh=True)
    if choice == 5:  # shorter than declared, then our side closes
        return b.case(
            "content_length",
            h(body[: len(body) // 2], headers={"Content-Length": str(len(body))}),
            fresh=True,
            half_close=True,
        )
    if choice == 6:  # longer than declared: the rest reads as a next request
        return b.case(
            "content_length",
            h(body + b"GARBAGE " + CANARY.encode() + b"\r\n\r\n", headers={"Content-Length": str(len(body))}),
            fresh=True,
        )
    if choice == 7:
        return b.case(
            "content_length",
            h(
                body,
                headers={
                    "Content-Length": rng.choice(["abc", "-1", "1e3", "0x10", " 5", "99999999999999999999"])
                },
            ),
            fresh=True,
        )
    if choice == 8:
        return b.case(
            "content_length",
            h(body, headers={"Content-Length": str(len(body)), "content-length": str(len(body) + 1)}),
            fresh=True,
        )
    if choice == 9:  # chunked, valid, in random pieces
        cuts = sorted(rng.sample(range(1, len(body)), min(3, len(body) - 1))) if len(body) > 4 else []
        pieces = [body[i:j] for i, j in zip([0, *cuts], [*cuts, len(body)], strict=True)]
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
        return b.case("transfer_encoding", h(chunked, headers={"Transfer-Encoding": "chunked"}))
    if choice == 10:
        bad = rng.choice(
            [
                b"zz\r\n" + body + b"\r\n0\r\n\r\n",
                b"ffffffffffffffffffff\r\n" + body,
                b"%x;ext=%s\r\n%s\r\n0\r\n\r\n" % (len(body), CANARY.encode(), body),
                b"5\r\nab\r\n0\r\n\r\n",
            ]
        )
        return b.case("transfer_encoding", h(bad, headers={"Transfer-Encoding": "chunked"}), fresh=True)
    if choice == 11:  # the last chunk never comes
        return b.case(
            "transfer_encoding",
            h(b"%x\r\n%s\r\n" % (len(body), body), headers={"Transfer-Encoding": "chunked"}),
            fresh=True,
            half_close=True,
        )
    if choice == 12:
        te = rng.choice(
            ["gzip, chunked", "chunked, gzip", "identity", "x-custom", "chunked, chunked", CANARY]
        )
        return b.case(
            "transfer_encoding",
            h(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body), headers={"Transfer-Encoding": te}),
            fresh=True,
        )
    if choice == 13:
        return b.case(
            "transfer_encoding",
            h(body, headers={"Transfer-Encoding": "chunked", "Content-Length": str(len(body))}),
            fresh=True,
        )
    if choice == 14:  # headers, then nothing: our side closes
        return b.case(
            "content_length", h(b"", headers={"Content-Length": "100"}), fresh=True, half_close=True
        )
    if choice == 15:
        version = rng.choice(["HTTP/1.0", "HTTP/2.0", "HTTP/0.9", "HTTP/1.2", "http/1.1"])
        return b.case("request_line", h(body, version=version), fresh=True)
    if choice == 16:
        return b.case("request_line", h(body, path="http://gateway" + ep.path))
    if choice == 17:
        garbage = rng.choice(
            [
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + CANARY.encode(),
                b"GET\r\n\r\n",
                CANARY.encode() + b"\r\n\r\n",
                b"\x00" * 32 + b"\r\n\r\n",
            ]
        )
        return b.case("request_line", garbage, fresh=True, path_known=False)
    if choice == 18:
        return b.case("request_line", h(body, path=ep.path + "/" + "a" * 9000), fresh=True, path_known=False)
    if choice == 19:
        return b.case("request_line", h(body, path=ep.path + "?key=" + CANARY + "&x=%ZZ"))
    return b.case("request_line", h(body, path=ep.path.replace("/v1/", "/v1//")))


def _method_case(ep: Endpoint, b: Builder, body: bytes, rng: random.Random) -> Case:
    method = rng.choice(["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "POST", "TRACE", "FOO", "get"])
    return b.case(
        "method", b.request(body if method != "HEAD" else b"", method=method), head=method == "HEAD"
    )


def randomised(ep: Endpoint, b: Builder, rng: random.Random) -> Iterator[Case]:
    templates = ep.templates or ({},)
    while True:
        template = rng.choice(templates)
        body = _json(template) if ep.templates else b""
        r = rng.random()
        if not ep.templates:  # GET endpoints: what there is to break is the request itself
            pick = rng.randrange(3)
            if pick == 0:
                yield _headers_case(ep, b, b"", rng)
            elif pick == 1:
                yield _framing_case(ep, b, b'{"x": 1}', rng)
            else:
                yield _method_case(ep, b, b"", rng)
            continue
        if r < 0.15:
            yield b.case("bad_json", b.request(_bad_json(body, rng)))
        elif r < 0.25:
            yield b.case("bad_utf8", b.request(_bad_utf8(body, rng)))
        elif r < 0.32:
            yield b.case("bad_text", b.request(_escapes(template, rng)))
        elif r < 0.42:
            depth = rng.choice([60, 129, 500, 999, 1001, 5000, 20000])
            yield b.case("deep_nesting", b.request(_nested(template, depth, rng)))
        elif r < 0.52:
            yield b.case("huge_number", b.request(_huge_number(template, rng)))
        elif r < 0.57:
            size = rng.choice([60_000, 70_000, 1_000_000])
            yield b.case(
                "huge_string",
                b.request(_json(_set(template, ("pad",), CANARY * (size // len(CANARY))))),
                fresh=size > 64 * 1024,
            )
        elif r < 0.72:
            yield _headers_case(ep, b, body, rng)
        elif r < 0.92:
            yield _framing_case(ep, b, body, rng)
        else:
            yield _method_case(ep, b, body, rng)


def cases(ep: Endpoint, key: str, seed: int) -> Iterator[Case]:
    """The systematic cases, shuffled, with a random one after every second
    of them; then random ones for as long as asked."""
    rng = random.Random(f"{seed}:{ep.name}")
    b = Builder(ep, key)
    fixed = list(systematic(ep, b))
    rng.shuffle(fixed)
    random_cases = randomised(ep, b, rng)
    for i, c in enumerate(fixed):
        yield c
        if i % 2:
            yield next(random_cases)
    yield from random_cases


def systematic_count(ep: Endpoint) -> int:
    """How many cases in: every systematic one has run."""
    n = sum(1 for _ in systematic(ep, Builder(ep, "")))
    return n + n // 2
