"""The exported script's payload: raw latin-1 bytes in a triple-quoted literal."""

from __future__ import annotations

import random

import pytest

from pgolf.export import bundle


def _round_trip(data: bytes) -> bytes:
    src = f"#coding:l1\nX={bundle.latin1_literal(data)}\n".encode("latin-1")
    space: dict = {}
    exec(compile(src, "t", "exec"), space)
    return space["X"].encode("latin-1")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b'"',
        b'""',
        b'"""',
        b'a"""""b""',
        b"'''\"\"\"",
        b'\\"\\',
        b"\x00\x001\r\r\n\n\\",
        bytes(range(256)) * 3,
    ],
)
def test_literal_round_trips(data):
    assert _round_trip(data) == data


def test_literal_round_trips_random_bytes_and_escapes_few_quotes():
    rng = random.Random(14)
    for n in (1, 2, 3, 50, 4000):
        for _ in range(40):
            data = bytes(rng.choice(b'"\'\\\x00\r\nab"""') for _ in range(n))
            assert _round_trip(data) == data
    data = bytes(rng.randrange(256) for _ in range(100_000))
    assert _round_trip(data) == data
    lit = bundle.latin1_literal(data)
    q = lit[0]
    # only every third quote of a run (and a run at the end) is escaped
    assert lit.count("\\" + q) <= data.count(q.encode()) // 3 + 2
    assert len(lit.encode("latin-1")) - len(data) < 0.013 * len(data)
