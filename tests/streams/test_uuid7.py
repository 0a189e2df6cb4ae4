"""Event ids: RFC 9562 UUIDv7, unique, time-ordered, and a forked child
never repeats its parent's ids (the random bytes are pooled)."""

from __future__ import annotations

import os
import time
import uuid

from streams.events import uuid7


def test_ids_are_version_7_unique_and_time_ordered() -> None:
    first = [uuid7() for _ in range(5000)]
    time.sleep(0.002)
    later = uuid7()
    parsed = [uuid.UUID(i) for i in first]
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in parsed)
    assert len(set(first)) == len(first)
    assert all(later > i for i in first)  # a later millisecond sorts after


def test_a_forked_child_draws_fresh_randomness() -> None:
    uuid7()  # the parent's pool is filled
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: write its next ids and leave at once
        os.close(r)
        os.write(w, "".join(uuid7() for _ in range(20)).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        child = f.read()
    os.waitpid(pid, 0)
    parent = [uuid7() for _ in range(20)]
    child_ids = [child[i : i + 36] for i in range(0, len(child), 36)]
    assert len(child_ids) == 20
    # the random tail (after the 48-bit time and version) never coincides
    assert not {c[15:] for c in child_ids} & {p[15:] for p in parent}
