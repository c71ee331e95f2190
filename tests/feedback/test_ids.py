"""Decision ids (feedback/ids.py): UUIDv7, unique, ordered by time, from the CSPRNG."""

from __future__ import annotations

import os
import time
import uuid
import warnings

import pytest

from feedback import ids
from feedback.ids import new_decision_id


def test_ids_are_v7_uuids_in_32_hex_digits_carrying_the_time() -> None:
    before = time.time_ns() // 1_000_000
    decision_id = new_decision_id()
    after = time.time_ns() // 1_000_000
    assert len(decision_id) == 32 and decision_id == decision_id.lower()
    u = uuid.UUID(hex=decision_id)
    assert u.version == 7 and u.variant == uuid.RFC_4122
    assert before <= u.int >> 80 <= after


def test_ids_are_unique_and_sort_by_creation_time() -> None:
    made = []
    for _ in range(5):
        made.append([new_decision_id() for _ in range(2_000)])  # > one entropy buffer
        time.sleep(0.002)
    flat = [i for batch in made for i in batch]
    assert len(set(flat)) == len(flat)
    # Ids of a later millisecond sort after every id of an earlier one.
    for earlier, later in zip(made, made[1:], strict=False):
        assert max(earlier) < min(later)


def test_the_random_part_comes_from_the_os(monkeypatch: pytest.MonkeyPatch) -> None:
    draws: list[int] = []

    def urandom(n: int) -> bytes:
        draws.append(n)
        return bytes(i % 256 for i in range(n))

    monkeypatch.setattr(ids.os, "urandom", urandom)
    monkeypatch.setattr(ids, "_entropy", ids._Entropy())
    a, b = new_decision_id(), new_decision_id()
    assert draws == [ids._BUFFER]  # one read serves many ids
    # Consecutive slices of that read: rand_b (the last 62 bits) of each id is the low
    # 62 bits of its 10 bytes.
    mask = (1 << 62) - 1
    assert uuid.UUID(a).int & mask == int.from_bytes(bytes(range(10)), "big") & mask
    assert uuid.UUID(b).int & mask == int.from_bytes(bytes(range(10, 20)), "big") & mask


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_reuse_its_parents_random_bytes() -> None:
    new_decision_id()  # the parent has a buffer of random bytes read ahead
    read, write = os.pipe()
    with warnings.catch_warnings():  # fork with other threads alive: the child only
        warnings.simplefilter("ignore", DeprecationWarning)  # makes an id and exits
        pid = os.fork()
    if pid == 0:
        try:
            os.write(write, new_decision_id().encode())
        finally:
            os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    parent = new_decision_id()
    mask = (1 << 62) - 1  # rand_b: had the child used the parent's buffer, these match
    assert len(child) == 32
    assert uuid.UUID(child).int & mask != uuid.UUID(parent).int & mask
