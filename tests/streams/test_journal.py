"""The publisher's journal: what a killed process wrote is found again, in
order, exactly the unresolved part, across wrap-arounds of the ring; torn
and stale records end the scan; a full ring never blocks."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import msgspec
import pytest
from prometheus_client import REGISTRY

from streams.journal import Journal, JournalBusy

REPO = Path(__file__).resolve().parents[2]


def _row(i: int, size: int = 100) -> tuple[str, str, bytes]:
    return (f"nexus.traffic.t{i % 5}", f"id-{i:06d}", bytes([i % 251]) * size)


def _write(j: Journal, rows: list[tuple[str, str, bytes]], per_record: int = 1) -> None:
    for i in range(0, len(rows), per_record):
        j.write(rows[i : i + per_record])


def test_a_killed_process_leaves_exactly_its_unresolved_events(tmp_path: Path) -> None:
    path = tmp_path / "outbox-n1.journal"
    # A real process writes 5,000 events, 3,000 of them resolved, and is
    # killed with SIGKILL: no close, no flush, no atexit.
    code = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {str(REPO)!r})
        from streams.journal import Journal
        from tests.streams.test_journal import _row, _write
        j = Journal(__import__("pathlib").Path({str(path)!r}), 4 * 1024 * 1024)
        j.reset()
        _write(j, [_row(i, 10 + i % 300) for i in range(5000)], per_record=7)
        j.release(3000)  # in the middle of a record: its resolved part comes back too
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    j = Journal(path, 4 * 1024 * 1024)
    try:
        # 3,000 is inside the record of events 2,996-3,002 (seven per record).
        assert j.stale == [_row(i, 10 + i % 300) for i in range(2996, 5000)]
    finally:
        j.close()


def test_random_sizes_across_many_laps_of_the_ring(tmp_path: Path) -> None:
    rng = random.Random(7)
    path = tmp_path / "j"
    j = Journal(path, 64 * 1024)
    j.reset()
    written: list[tuple[str, str, bytes]] = []
    resolved = 0
    i = 0
    while i < 20_000:  # ~150 laps of a 64 KiB ring
        batch = [_row(i + k, rng.randrange(0, 900)) for k in range(rng.randrange(1, 6))]
        i += len(batch)
        j.write(batch)
        written.append(batch)
        if rng.random() < 0.5:  # resolve whole records (a partial one comes back whole)
            n = rng.randrange(0, len(written) - resolved + 1)
            j.release(sum(len(b) for b in written[resolved : resolved + n]))
            resolved += n
    j.close()  # no release: what a restart finds is the unresolved tail
    again = Journal(path, 64 * 1024)
    try:
        assert again.stale == [row for batch in written[resolved:] for row in batch]
    finally:
        again.close()


def test_a_torn_record_ends_the_scan_at_the_last_whole_one(tmp_path: Path) -> None:
    path = tmp_path / "j"
    j = Journal(path, 64 * 1024)
    j.reset()
    _write(j, [_row(i) for i in range(10)])
    # The 8th record's copy was interrupted before its end (a crash in the
    # middle of the memcpy): its trailer is not its sequence number.
    assert j._mm is not None
    record = 16 + len(msgspec.msgpack.encode([_row(0)])) + 8
    trailer = 4096 + 8 * record - 8
    j._mm[trailer : trailer + 8] = bytes(8)
    j.close()
    again = Journal(path, 64 * 1024)
    try:
        assert again.stale == [_row(i) for i in range(7)]
    finally:
        again.close()


def test_records_of_an_earlier_incarnation_are_never_read_as_ours(tmp_path: Path) -> None:
    path = tmp_path / "j"
    j = Journal(path, 64 * 1024)
    j.reset()
    _write(j, [_row(i) for i in range(50)])
    j.release(50)  # all resolved
    j.close()
    again = Journal(path, 64 * 1024)
    assert again.stale == []
    again.reset()
    # One record of the same size at the same place as the first old one,
    # then a stop: the old records after it must not come back with it.
    _write(again, [_row(999)])
    again.close()
    third = Journal(path, 64 * 1024)
    try:
        assert third.stale == [_row(999)]
    finally:
        third.close()


def test_a_full_ring_keeps_emitting_and_counts(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j", 8 * 1024)
    j.reset()
    before = REGISTRY.get_sample_value("nexus_publish_journal_full_total") or 0.0
    _write(j, [_row(i, 500) for i in range(40)])  # ~20 KB into 8 KiB
    full = (REGISTRY.get_sample_value("nexus_publish_journal_full_total") or 0.0) - before
    assert full > 0
    j.release(40)  # resolving all of them, journaled or not, frees the ring
    _write(j, [_row(100 + i, 500) for i in range(10)])
    assert (REGISTRY.get_sample_value("nexus_publish_journal_full_total") or 0.0) - before == full
    j.close()


def test_two_processes_cannot_share_a_journal(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j", 8 * 1024)
    try:
        code = (
            f"import sys, pathlib; sys.path.insert(0, {str(REPO)!r}); from streams.journal import Journal; "
            f"Journal(pathlib.Path({str(tmp_path / 'j')!r}))"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0 and "JournalBusy" in proc.stderr
    finally:
        j.close()
    with pytest.raises(JournalBusy):
        first = Journal(tmp_path / "k", 8 * 1024)
        try:
            Journal(tmp_path / "k", 8 * 1024)
        finally:
            first.close()


@pytest.mark.parametrize("size", [0, 1, 65_000])
def test_payload_sizes_round_trip(tmp_path: Path, size: int) -> None:
    path = tmp_path / "j"
    j = Journal(path, 256 * 1024)
    j.reset()
    _write(j, [_row(1, size)])
    j.close()
    again = Journal(path, 256 * 1024)
    try:
        assert again.stale == [_row(1, size)]
    finally:
        again.close()


def _resident_kb(path: Path) -> int:
    """The resident size of this process's mapping of ``path``."""
    lines = Path("/proc/self/smaps").read_text().splitlines()
    for i, line in enumerate(lines):
        if line.endswith(str(path)):
            for field in lines[i + 1 :]:
                if field.startswith("Rss:"):
                    return int(field.split()[1])
    raise AssertionError(f"{path} is not mapped")


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs /proc/self/smaps (Linux)")
def test_written_pages_leave_the_process_across_the_ring_end(tmp_path: Path) -> None:
    # A slow-NATS burst journals laps of the ring, unresolved until NATS
    # catches up, then the gateway goes idle (no release follows): written
    # pages are the kernel's page cache, never the process's RSS, the piece
    # after a wrap included -- and they are still what a restart reads.
    path = tmp_path / "outbox-n1.journal"
    ring = 8 * 1024 * 1024
    j = Journal(path, ring)
    rows: list[tuple[str, str, bytes]] = []
    try:
        j.reset()
        for lap in range(3):
            rows = [_row(lap * 4000 + i, 1400) for i in range(4000)]  # ~5.7 MB: wraps every other lap
            _write(j, rows, per_record=20)
            # Unresolved: what is mapped is the header page and less than
            # one unmapping step (256 KiB) plus the page being filled.
            assert _resident_kb(path) <= 4 + 256 + 4, f"lap {lap}"
            if lap < 2:
                j.release(len(rows))  # one release for the lot, as after a catch-up
    finally:
        j.close()
    # The last lap, never released, is in the file for the next start.
    again = Journal(path, ring)
    try:
        assert again.stale == rows
    finally:
        again.close()
