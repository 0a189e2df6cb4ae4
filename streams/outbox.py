"""A local, durable, ordered queue of events that could not be published.

SQLite in WAL mode: one file, crash-safe, ordered by an autoincrement
sequence, and it ships with Python.  It is only written while NATS is
unreachable (or slower than the traffic), so its blocking calls run in a
worker thread and never on the event loop.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

Row = tuple[str, str, bytes]  # subject, msg id, payload


class Outbox:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: an event accepted into the outbox survives a power cut too.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS outbox ("
            " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
            " subject TEXT NOT NULL, msg_id TEXT NOT NULL, data BLOB NOT NULL)"
        )
        # Events JetStream refused for good (over its size limit, say): set
        # aside so they never block the events behind them, kept for an
        # operator to look at (sqlite3 <outbox> 'select * from rejected').
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS rejected ("
            " seq INTEGER PRIMARY KEY, subject TEXT NOT NULL, msg_id TEXT NOT NULL, data BLOB NOT NULL,"
            " reason TEXT NOT NULL, rejected_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
        )

    def append(self, rows: list[Row]) -> None:
        if not rows:
            return
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT INTO outbox(subject, msg_id, data) VALUES (?, ?, ?)", rows)
            self._db.execute("COMMIT")

    def head(self, limit: int) -> list[tuple[int, str, str, bytes]]:
        with self._lock:
            cur = self._db.execute(
                "SELECT seq, subject, msg_id, data FROM outbox ORDER BY seq LIMIT ?", (limit,)
            )
            return list(cur.fetchall())

    def delete_through(self, seq: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM outbox WHERE seq <= ?", (seq,))

    def set_aside(self, seq: int, reason: str) -> None:
        """Move one event from the queue to ``rejected``."""
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO rejected(seq, subject, msg_id, data, reason)"
                " SELECT seq, subject, msg_id, data, ? FROM outbox WHERE seq = ?",
                (reason, seq),
            )
            self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
            self._db.execute("COMMIT")

    def rejected(self) -> list[tuple[str, str, bytes, str]]:
        with self._lock:
            cur = self._db.execute("SELECT subject, msg_id, data, reason FROM rejected ORDER BY seq")
            return list(cur.fetchall())

    def count(self) -> int:
        with self._lock:
            (n,) = self._db.execute("SELECT count(*) FROM outbox").fetchone()
            return int(n)

    def close(self) -> None:
        with self._lock:
            self._db.close()
