"""Sends fuzz cases over raw keep-alive connections and judges each answer:
no 5xx, an error well formed in the caller's grammar, nothing of the
caller's echoed, and the connection honest (reused after an answer that did
not say ``Connection: close``; closed by the server after one that did)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from tests.fuzz.cases import Case
from tests.fuzz.corpus import CANARY

ANSWER_TIMEOUT_S = 20.0


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    version: str

    @property
    def closes(self) -> bool:
        return self.headers.get("connection", "").lower() == "close" or (
            self.version == "HTTP/1.0" and self.headers.get("connection", "").lower() != "keep-alive"
        )


@dataclass
class Report:
    cases: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    # (kind, what went wrong) -> how often, and the first case it happened to
    failures: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)
    server_errors: int = 0
    echoes: int = 0
    dishonest: int = 0
    client_closed: int = 0  # cases that shut our side mid-request and got no answer (nobody to answer)

    def fail(self, case: Case, why: str, answer: Answer | None = None) -> None:
        key = (case.kind, why)
        n, example = self.failures.get(key, (0, ""))
        if not example:
            shown = answer.body[:300] if answer is not None else b""
            example = f"{case.data[:400]!r} -> {shown!r}"
        self.failures[key] = (n + 1, example)

    def lines(self) -> list[str]:
        return [f"[{kind}] {why} x{n}: {example}" for (kind, why), (n, example) in self.failures.items()]


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> _Conn:
        reader, writer = await asyncio.open_connection(host, port, limit=2**20)
        return cls(reader, writer)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()

    async def answer(self, head: bool) -> Answer:
        while True:
            try:
                raw = await self.reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                raise ConnectionError("closed before an answer") from exc
            lines = raw.decode("latin-1").split("\r\n")
            version, status = lines[0].split(" ", 2)[:2]
            headers: dict[str, str] = {}
            for line in lines[1:]:
                if ":" in line:
                    k, _, v = line.partition(":")
                    headers[k.strip().lower()] = v.strip()
            if 100 <= int(status) < 200:
                continue  # 100 Continue: the answer follows
            if head:
                return Answer(int(status), headers, b"", version)
            if headers.get("transfer-encoding", "").lower() == "chunked":
                body = b""
                while True:
                    size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    chunk = await self.reader.readexactly(size + 2)
                    if size == 0:
                        break
                    body += chunk[:-2]
            elif "content-length" in headers:
                body = await self.reader.readexactly(int(headers["content-length"]))
            else:
                body = await self.reader.read()  # until the server closes
            return Answer(int(status), headers, body, version)

    async def server_closed(self, timeout: float = 2.0) -> bool:
        try:
            async with asyncio.timeout(timeout):
                return await self.reader.read(1) == b""
        except TimeoutError:
            return False
        except (ConnectionError, OSError):
            return True


def well_formed_error(case: Case, answer: Answer) -> str:
    """ "" when the error is well formed in the case's grammar, else why not."""
    if not answer.headers.get("content-type", "").startswith("application/json"):
        return f"content type {answer.headers.get('content-type')!r}"
    try:
        body = json.loads(answer.body)
    except ValueError:
        return "not JSON"
    anthropic = case.anthropic and case.path_known
    if anthropic:
        ok = (
            isinstance(body, dict)
            and set(body) == {"type", "error"}
            and body["type"] == "error"
            and isinstance(body["error"], dict)
            and set(body["error"]) == {"type", "message"}
            and all(isinstance(body["error"][k], str) and body["error"][k] for k in ("type", "message"))
        )
        return "" if ok else "not Anthropic's error shape"
    ok = (
        isinstance(body, dict)
        and set(body) == {"error"}
        and isinstance(body["error"], dict)
        and set(body["error"]) == {"message", "type", "code", "param"}
        and isinstance(body["error"]["message"], str)
        and bool(body["error"]["message"])
        and isinstance(body["error"]["type"], str)
        and (body["error"]["code"] is None or isinstance(body["error"]["code"], str))
        and (body["error"]["param"] is None or isinstance(body["error"]["param"], str))
    )
    return "" if ok else "not OpenAI's error shape"


def echoed(answer: Answer) -> bool:
    needle = CANARY.encode()
    if answer.status >= 400 and needle in answer.body:
        return True
    return any(CANARY in v for v in answer.headers.values())


def judge(case: Case, answer: Answer, report: Report) -> None:
    report.statuses[answer.status] += 1
    if answer.status >= 500:
        report.server_errors += 1
        report.fail(case, f"server error {answer.status}", answer)
    if answer.status >= 400 and not case.head:  # a HEAD answer has no body
        why = well_formed_error(case, answer)
        if why:
            report.fail(case, f"malformed {answer.status} error ({why})", answer)
    if echoed(answer):
        report.echoes += 1
        report.fail(case, "input echoed back", answer)


async def run(host: str, port: int, todo: Iterator[Case], limit: int, seconds: float, workers: int) -> Report:
    """Up to ``limit`` cases, for at most ``seconds``, on ``workers`` connections."""
    report = Report()
    deadline = time.monotonic() + seconds

    def next_case() -> Case | None:
        if report.cases >= limit or time.monotonic() > deadline:
            return None
        report.cases += 1
        return next(todo)

    async def worker() -> None:
        conn: _Conn | None = None
        previous: Case | None = None  # the case whose answer left this connection open
        while (case := next_case()) is not None:
            report.kinds[case.kind] += 1
            if case.fresh and conn is not None:
                await conn.close()
                conn, previous = None, None
            if conn is None:
                conn = await _Conn.open(host, port)
            try:
                conn.writer.write(case.data)
                await conn.writer.drain()
                if case.half_close:
                    with contextlib.suppress(OSError):
                        conn.writer.write_eof()
                async with asyncio.timeout(ANSWER_TIMEOUT_S):
                    answer = await conn.answer(case.head)
            except TimeoutError:
                report.fail(case, f"no answer in {ANSWER_TIMEOUT_S:.0f} s")
                await conn.close()
                conn, previous = None, None
                continue
            except (ConnectionError, OSError, ValueError, asyncio.LimitOverrunError) as exc:
                if previous is not None:
                    # The last answer on this connection did not say it would close.
                    report.dishonest += 1
                    report.fail(previous, "connection dropped after an answer without Connection: close")
                elif case.half_close:
                    report.client_closed += 1
                else:
                    report.fail(case, f"no answer ({type(exc).__name__})")
                await conn.close()
                conn, previous = None, None
                continue
            judge(case, answer, report)
            if answer.closes:
                if not await conn.server_closed():
                    report.dishonest += 1
                    report.fail(case, "said Connection: close and kept the connection open", answer)
                await conn.close()
                conn, previous = None, None
            elif case.fresh:
                await conn.close()
                conn, previous = None, None
            else:
                previous = case
        if conn is not None:
            await conn.close()

    await asyncio.gather(*(worker() for _ in range(workers)))
    return report
