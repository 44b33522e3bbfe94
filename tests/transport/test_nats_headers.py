"""Header blocks read back: names in any case and spacing, values trimmed, the status line.

Where the C extension is built, every test runs on both readers (its
``header_lines`` and the pure ``_read_lines``), and a randomized test checks
they agree on blocks full of odd bytes.
"""

from __future__ import annotations

import random

import pytest

from organelle._native import speedups
from organelle.transport import _nats_headers
from organelle.transport._nats_headers import _read_lines, parse_headers

READERS = ["pure", "c"] if speedups is not None else ["pure"]


@pytest.fixture(params=READERS)
def reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "pure":
        monkeypatch.setattr(_nats_headers, "_c_lines", None)
    return str(request.param)


@pytest.mark.usefixtures("reader")
def test_names_are_lower_cased_and_values_trimmed_every_time() -> None:
    block = (
        b"NATS/1.0\r\nOrganelle-Id: a-1\r\n CE-Type :order.placed  \r\nno colon here\r\n"
        b"ce-id: x:y\r\nce-ID: last wins\r\n\r\n"
    )
    expected = {"organelle-id": "a-1", "ce-type": "order.placed", "ce-id": "last wins"}
    for _ in range(2):  # the second time from the names and lines seen the first
        assert parse_headers(block) == (0, expected)


@pytest.mark.usefixtures("reader")
def test_the_status_line() -> None:
    assert parse_headers(b"NATS/1.0 503\r\n\r\n") == (503, {})
    assert parse_headers(b"NATS/1.0 404 No Messages\r\nA: 1\r\n\r\n") == (404, {"a": "1"})
    assert parse_headers(b"NATS/1.0 abc\r\n\r\n") == (0, {})
    assert parse_headers(b"NATS/1.0") == (0, {})
    assert parse_headers(None) == (0, {})
    assert parse_headers(b"") == (0, {})


@pytest.mark.usefixtures("reader")
def test_many_distinct_names_stay_readable() -> None:
    block = "NATS/1.0\r\n" + "".join(f"X-N{i}: {i}\r\n" for i in range(3000)) + "\r\n"
    status, headers = parse_headers(block.encode())
    assert status == 0
    assert headers == {f"x-n{i}": str(i) for i in range(3000)}


@pytest.mark.usefixtures("reader")
def test_steady_lines_kept_parsed_read_the_same_as_new_ones() -> None:
    for n in range(1500):  # past the bound of kept lines
        block = f"NATS/1.0\r\nce-type: t.{n % 1100}\r\nce-id: {n}\r\nContent-Type:  a/b \r\n\r\n"
        assert parse_headers(block.encode())[1] == {
            "ce-type": f"t.{n % 1100}",
            "ce-id": str(n),
            "content-type": "a/b",
        }


@pytest.mark.usefixtures("reader")
def test_non_ascii_whitespace_and_bad_utf8_read_as_str_would() -> None:
    block = (
        "NATS/1.0\r\nÉTÉ: \u00a0chaud\u2003\r\nK:\x85v\r\n".encode() + b"Bad\xff: \xe2\x82\r\n\r\n"
    )
    assert parse_headers(block)[1] == {"été": "chaud", "k": "v", "bad\ufffd": "\ufffd"}


@pytest.mark.skipif(speedups is None, reason="the C extension is not built")
def test_the_c_reader_agrees_with_the_pure_one_on_random_blocks() -> None:
    assert speedups is not None
    pieces = [
        b"\r\n", b"\r", b"\n", b":", b" ", b"\t", b"\x0b", b"\x1c", b"a", b"Ce-Id", b"ce-id",
        b"Z", b"\xc2\xa0", b"\xc2\x85", b"\xe2\x80\x83", b"\xff", b"\xe2\x82", b"\xc3\x89",
        b"value", b"%20", b"\xf0\x9f\x98\x80", b"\x00",
    ]  # fmt: skip
    rng = random.Random(12)
    for _ in range(3000):
        block = b"".join(rng.choice(pieces) for _ in range(rng.randrange(0, 30)))
        start = rng.randrange(0, len(block) + 1)
        assert speedups.header_lines(block, start) == _read_lines(block[start:]), block
