"""The publisher's journal: every emitted event, in a memory-mapped file,
from the moment ``emit`` returns until JetStream acknowledged it or the
outbox (SQLite, fsync'ed) holds it.

Writing into a shared file mapping is a copy into the page cache, no system
call (about a microsecond for an event): cheap enough for the request path,
and the page cache belongs to the kernel, so a killed process (``kill -9``,
the OOM killer, a crash) loses nothing it wrote.  The next start moves what
was still unresolved into the outbox.  A machine crash can lose what the
kernel had not yet written back; the publisher ``sync``s the journal once a
second, which bounds that to the last second.

Layout (native byte order: the file never leaves this machine): a 4 KiB
header (magic, ring size, where the unresolved records start and the
sequence number expected there), then a ring of records.  A record holds
the events journaled together (``write``): a 16-byte header (body length,
event count, sequence number), the events as one msgpack array of
(subject, message id, payload), and an 8-byte trailer repeating the
sequence number, written in one copy from start to end.  A record a crash
interrupted ends in an older trailer, and a stale one from an earlier lap
of the ring carries an older sequence number: either ends the recovery
scan.  (No checksum: a record torn by a machine crash in the pages between
its header and trailer is not detected; what consumers cannot decode goes
to their dead-letter subject.)
"""

from __future__ import annotations

import fcntl
import logging
import mmap
import os
import struct
from array import array
from pathlib import Path

import msgspec
from prometheus_client import Counter

log = logging.getLogger("nexus.publisher")

Row = tuple[str, str, bytes]  # subject, msg id, payload

# Room for seconds of peak traffic while NATS hangs and the outbox catches up
# (16 MiB overflowed in 3 s at ~2,300 requests a second: tests/streams/test_crash_durability).
DEFAULT_SIZE = 64 * 1024 * 1024
_MAGIC = b"NXJ1"
_HEAD = struct.Struct("@4sIQQ")  # magic, ring size, done offset, done sequence
_PAGE = 4096
_REC = struct.Struct("@IIQ")  # body length, event count, sequence
_TRAIL = struct.Struct("@Q")  # the sequence again
_encode_rows = msgspec.msgpack.Encoder().encode
_decode_rows = msgspec.msgpack.Decoder(list[tuple[str, str, bytes]]).decode
_WRAP = 0xFFFFFFFF  # a record header with this length: continue at the ring's start
# Unmap what was written once this much of the ring lies behind the write
# offset (``_unmap``).
_TRIM = 256 * 1024

JOURNAL_FULL = Counter(
    "nexus_publish_journal_full_total",
    "Events emitted while the journal was full (held in memory only until published or outboxed)",
)


class JournalBusy(RuntimeError):
    """Another process has this journal open (two nodes with one node id?)."""


class Journal:
    def __init__(self, path: Path, size: int = DEFAULT_SIZE) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise JournalBusy(f"{path} is open in another process") from None
        self._want = size
        self._size = size
        self._mm: mmap.mmap | None = None
        # What an earlier process left unresolved: read now, kept in the
        # file until ``reset`` (after the caller has it in the outbox).
        self.stale: list[Row] = []
        existing = os.fstat(self._fd).st_size
        if existing >= _PAGE + _REC.size:
            mm = self._mm = self._map(existing)
            magic, ring, done_off, done_seq = _HEAD.unpack_from(mm, 0)
            if magic == _MAGIC and ring == existing - _PAGE:
                self._size = ring
                self.stale = self._scan(done_off, done_seq)
            else:
                log.warning("%s is not a journal this version reads; starting a new one", path)
        self._seq = 1  # the next record's sequence number
        # Bytes of ring ever used (records and the waste before a wrap: the
        # write offset is this modulo the ring size), and that count at the
        # done offset: their difference is what is live.
        self._total = self._total_done = 0
        self._trimmed_total = 0  # bytes used up to which the mapping's pages were dropped
        # Per record not yet resolved, oldest first from ``_first`` on: how
        # many events it holds, the bytes used before and through it, its
        # sequence number (events that did not fit form an empty record at
        # the end of the last one that did).  ``_partial``: events of record
        # ``_first`` already resolved.  Arrays of machine integers: nothing
        # for the garbage collector to track.
        self._rec_count = array("q")
        self._rec_start = array("q")
        self._rec_end = array("q")
        self._rec_seq = array("q")
        self._first = self._partial = 0
        self._dirty = False

    def _map(self, length: int) -> mmap.mmap:
        return mmap.mmap(self._fd, length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)

    def reset(self) -> None:
        """Start an empty ring (the stale records are safe elsewhere now).
        Sequence numbers start at a random point: a record an earlier
        process left at the same place can never pass for one of ours."""
        if self._mm is not None:
            self._mm.close()
        os.ftruncate(self._fd, _PAGE + self._want)
        self._mm = self._map(_PAGE + self._want)
        self._size = self._want
        self._seq = int.from_bytes(os.urandom(5), "little") + 1
        self._total = self._total_done = self._trimmed_total = 0
        for arr in (self._rec_count, self._rec_start, self._rec_end, self._rec_seq):
            del arr[:]
        self._first = self._partial = 0
        self.stale = []
        _HEAD.pack_into(self._mm, 0, _MAGIC, self._size, 0, self._seq)

    # --- the request path -------------------------------------------------

    def write(self, rows: list[Row]) -> None:
        """Journal events, oldest first, as one record (never blocks, never
        raises on a full ring: those events then live in memory only,
        counted)."""
        seq = self._seq
        body = _encode_rows(rows)
        record = b"".join((_REC.pack(len(body), len(rows), seq), body, _TRAIL.pack(seq)))
        need = len(record)
        ring = self._size
        start = self._total
        off = start % ring  # (the bytes used so far, wrap waste included)
        waste = ring - off if off + need > ring else 0
        total = start + waste + need
        n = len(rows)
        if total - self._total_done > ring:
            JOURNAL_FULL.inc(n)
            # An empty record at the end of the last one that did fit:
            # resolving these events moves the done offset no further.
            self._note(n, start, start, seq - 1)
            return
        mm = self._mm
        assert mm is not None, "reset() first"
        if waste >= _REC.size:
            _REC.pack_into(mm, _PAGE + off, _WRAP, 0, seq)
        end = total % ring or ring
        mm[_PAGE + end - need : _PAGE + end] = record
        self._note(n, start, total, seq)
        self._seq = seq + 1
        self._total = total
        self._dirty = True
        if total - self._trimmed_total >= _TRIM:
            self._unmap()

    def _note(self, n: int, start: int, end: int, seq: int) -> None:
        self._rec_count.append(n)
        self._rec_start.append(start)
        self._rec_end.append(end)
        self._rec_seq.append(seq)

    # --- the flusher ------------------------------------------------------

    def release(self, n: int) -> None:
        """The ``n`` oldest journaled events are resolved (acknowledged by
        JetStream or in the outbox)."""
        counts = self._rec_count
        i = self._first
        left = n + self._partial  # events resolved from record i on
        while i < len(counts) and left >= counts[i]:
            left -= counts[i]
            i += 1
        if i < len(counts) and left > 0:
            # Part of record i is still unresolved: the done offset stops
            # before it (a restart publishes its resolved part again, which
            # JetStream deduplicates by message id).
            total, expect = self._rec_start[i], self._rec_seq[i]
        elif i > 0:
            total, expect = self._rec_end[i - 1], self._rec_seq[i - 1] + 1
        else:
            return
        self._partial = left if i < len(counts) else 0
        self._first = i
        if i > 1024:  # forget the resolved records now and then
            for arr in (counts, self._rec_start, self._rec_end, self._rec_seq):
                del arr[:i]
            self._first = 0
        if total == self._total_done:
            return
        self._total_done = total
        assert self._mm is not None
        _HEAD.pack_into(self._mm, 0, _MAGIC, self._size, total % self._size, expect)

    def _unmap(self) -> None:
        """Drop the pages written so far from this process's mapping.

        A write here is a copy into the page cache, as ``write(2)`` is: the
        pages belong to the kernel, which writes them back (``sync``) and
        keeps them for a restart's recovery scan whether or not they are
        mapped (dropping a dirty page of a shared file mapping leaves it
        dirty in the page cache).  Left mapped, every page the ring had
        touched counted in the process's RSS (as ``RssFile``): up to the
        whole 64 MiB while NATS was slow, and after a slow-NATS burst, when
        resolved pages were given back only on release (by ring offsets,
        so the piece after a wrap stayed until a next release that an idle
        gateway never makes: 66 MB).  Now nothing behind the write offset
        stays mapped: counted in bytes ever used, split at the ring's end,
        one ``madvise`` per ``_TRIM`` written."""
        lo, hi = self._trimmed_total, self._total
        size = self._size
        lo = max(lo, hi - size)
        while lo < hi:
            off = lo % size
            piece = min(hi - lo, size - off)
            begin = -(-off // _PAGE) * _PAGE
            end = (off + piece) // _PAGE * _PAGE
            if end > begin and self._mm is not None and hasattr(mmap, "MADV_DONTNEED"):
                self._mm.madvise(mmap.MADV_DONTNEED, _PAGE + begin, end - begin)
            lo += piece
        # The page the write offset falls in is still being filled: the
        # next drop starts at its beginning.
        self._trimmed_total = hi - (hi % size) % _PAGE

    def sync(self) -> None:
        """Write dirty pages back (a thread: msync blocks)."""
        if self._dirty and self._mm is not None:
            self._dirty = False
            self._mm.flush()

    def close(self) -> None:
        try:
            if self._mm is not None:
                self._mm.flush()
                self._mm.close()
                self._mm = None
        finally:
            os.close(self._fd)

    # --- recovery ---------------------------------------------------------

    def _scan(self, off: int, seq: int) -> list[Row]:
        rows: list[Row] = []
        mm = self._mm
        assert mm is not None
        size = self._size
        for _ in range(size // _REC.size + 1):
            if off + _REC.size > size:
                off = 0
            length, count, rec_seq = _REC.unpack_from(mm, _PAGE + off)
            if rec_seq != seq:
                break
            if length == _WRAP:
                off = 0
                continue
            end = off + _REC.size + length + _TRAIL.size
            if end > size or _TRAIL.unpack_from(mm, _PAGE + end - _TRAIL.size)[0] != seq:
                break
            try:
                batch = _decode_rows(mm[_PAGE + off + _REC.size : _PAGE + end - _TRAIL.size])
            except msgspec.DecodeError:
                break
            if len(batch) != count:
                break
            rows.extend(batch)
            off = end
            seq += 1
        return rows
