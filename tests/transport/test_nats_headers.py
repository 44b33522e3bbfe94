"""Header blocks read back: names in any case and spacing, values trimmed, the status line."""

from __future__ import annotations

from organelle.transport._nats_headers import parse_headers


def test_names_are_lower_cased_and_values_trimmed_every_time() -> None:
    block = (
        b"NATS/1.0\r\nOrganelle-Id: a-1\r\n CE-Type :order.placed  \r\nno colon here\r\n"
        b"ce-id: x:y\r\nce-ID: last wins\r\n\r\n"
    )
    expected = {"organelle-id": "a-1", "ce-type": "order.placed", "ce-id": "last wins"}
    for _ in range(2):  # the second time from the names seen the first
        assert parse_headers(block) == (0, expected)


def test_the_status_line() -> None:
    assert parse_headers(b"NATS/1.0 503\r\n\r\n") == (503, {})
    assert parse_headers(b"NATS/1.0 abc\r\n\r\n") == (0, {})
    assert parse_headers(None) == (0, {})
    assert parse_headers(b"") == (0, {})


def test_many_distinct_names_stay_readable() -> None:
    block = "NATS/1.0\r\n" + "".join(f"X-N{i}: {i}\r\n" for i in range(3000)) + "\r\n"
    status, headers = parse_headers(block.encode())
    assert status == 0
    assert headers == {f"x-n{i}": str(i) for i in range(3000)}


def test_steady_lines_kept_parsed_read_the_same_as_new_ones() -> None:
    for n in range(1500):  # past the bound of kept lines
        block = f"NATS/1.0\r\nce-type: t.{n % 1100}\r\nce-id: {n}\r\nContent-Type:  a/b \r\n\r\n"
        assert parse_headers(block.encode())[1] == {
            "ce-type": f"t.{n % 1100}",
            "ce-id": str(n),
            "content-type": "a/b",
        }
