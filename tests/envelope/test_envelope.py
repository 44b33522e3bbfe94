"""The envelope and its CloudEvents binary-mode headers, both ways."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from organelle import Context, Envelope, ValidationError
from organelle.envelope import EnvelopeFactory, from_headers, to_headers
from organelle.envelope._envelope import header_lines


def envelope(**extra: Any) -> Envelope[Any]:
    fields: dict[str, Any] = {
        "id": "e-1",
        "source": "/organelle/shop/n1/orders",
        "type": "order.placed",
        "data": {"n": 1},
    }
    fields.update(extra)
    return Envelope(**fields)


def test_headers_round_trip_every_attribute() -> None:
    env = envelope(
        time=datetime(2026, 12, 3, 7, 0, 1, 250000, tzinfo=UTC),
        subject="order o-1 — é",
        datacontenttype="application/json",
        dataschema="urn:organelle:event:order.placed@2",
        correlationid="c-1",
        causationid="p-1",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        dataversion=2,
        partitionkey="o-1",
        extensions={"tenant": "acme"},
    )
    headers = to_headers(env)
    assert headers["ce-id"] == "e-1"
    assert headers["ce-specversion"] == "1.0"
    assert headers["ce-time"] == "2026-12-03T07:00:01.250000Z"
    assert headers["content-type"] == "application/json"
    assert headers["ce-tenant"] == "acme"
    assert all(h.isascii() and " " not in v for h, v in headers.items() for _ in [v])
    assert from_headers(headers, {"n": 1}) == env


def test_names_are_read_in_any_case_and_offsets_kept() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    headers = {k.upper(): v for k, v in to_headers(envelope(time=when)).items()}
    got = from_headers(headers, None)
    assert got is not None
    assert got.time == when
    assert got.data is None


def test_no_ce_headers_means_no_envelope() -> None:
    assert from_headers({"organelle-id": "x", "content-type": "application/json"}, 1) is None


@pytest.mark.parametrize(
    ("headers", "field"),
    [
        ({"ce-id": "1", "ce-source": "/s", "ce-specversion": "1.0"}, "ce-type"),
        (
            {"ce-id": "1", "ce-source": "/s", "ce-type": "t", "ce-specversion": "0.3"},
            "ce-specversion",
        ),
        (
            {
                "ce-id": "1",
                "ce-source": "/s",
                "ce-type": "t",
                "ce-specversion": "1.0",
                "ce-time": "x",
            },
            "ce-time",
        ),
        (
            {
                "ce-id": "1",
                "ce-source": "/s",
                "ce-type": "t",
                "ce-specversion": "1.0",
                "ce-dataversion": "two",
            },
            "ce-dataversion",
        ),
    ],
)
def test_malformed_attributes_are_validation_errors(headers: dict[str, str], field: str) -> None:
    with pytest.raises(ValidationError) as bad:
        from_headers(headers, None)
    assert field in {e["field"] for e in bad.value.errors}
    assert bad.value.code == "organelle.validation"


def test_with_data_keeps_the_attributes() -> None:
    env = envelope(dataversion=3)
    other = env.with_data([1, 2])
    assert other.data == [1, 2]
    assert other.id == env.id
    assert other.dataversion == 3


def _reference_lines(env: Envelope[Any], content_type: str) -> str:
    """``header_lines`` spelled the slow way: ``to_headers`` minus what the wire carries apart."""
    carried = {"ce-correlationid", "ce-causationid", "ce-traceparent", "content-type"}
    lines = [f"{k}: {v}\r\n" for k, v in to_headers(env).items() if k not in carried]
    return "".join(lines) + f"content-type: {content_type}\r\n"


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"time": datetime(2026, 12, 3, 7, 0, 1, 250000, tzinfo=UTC)},
        {"time": datetime(2026, 12, 3, 7, 0, 1, tzinfo=UTC)},  # no fraction: isoformat drops it
        {"time": datetime(2026, 12, 3, 7, 0, 1, 7)},  # noqa: DTZ001 - naive: read as UTC
        {"time": datetime(2026, 12, 3, 7, 0, 1, 5, tzinfo=timezone(timedelta(hours=2)))},
        {
            "time": datetime(2026, 12, 3, 7, 0, 2, 999999, tzinfo=UTC),
            "subject": "o 1 — é",
            "dataschema": "urn:organelle:event:order.placed@2",
            "dataversion": 2,
            "partitionkey": "k%1",
            "correlationid": "c-1",
            "traceparent": "00-abc-def-01",
            "extensions": {"tenant": "a b", "region": "eu"},
        },
    ],
)
def test_header_lines_are_to_headers_in_order(extra: dict[str, Any]) -> None:
    env = envelope(**extra)
    for _ in range(2):  # the second time from the kept constant lines and second
        assert header_lines(env, "application/json") == _reference_lines(env, "application/json")


def test_ce_time_text_follows_the_second_it_is_in() -> None:
    start = datetime(2026, 12, 31, 23, 59, 58, 999999, tzinfo=UTC)
    for step_us in (0, 1, 2, 1_000_001, 3_600_000_000, 86_400_000_000 * 40):
        when = start + timedelta(microseconds=step_us)
        (line,) = [x for x in header_lines(envelope(time=when)).split("\r\n") if "ce-time" in x]
        assert line == f"ce-time: {when.isoformat().replace('+00:00', 'Z')}"


@pytest.mark.parametrize(
    "ctx",
    [
        Context(7, None, None, None, None, {}, "t"),  # a root: its own correlation
        Context(9, None, 7, 8, None, {}, "t"),  # a child, ids from this process
        Context("r-1", None, "c-1", "p-1", None, {}, "t"),  # ids read off the wire
    ],
)
def test_the_envelope_carries_the_contexts_ids_as_it_prints_them(ctx: Context) -> None:
    env = EnvelopeFactory("shop", "n1").make("t", {"a": 1}, ctx)
    assert env.correlationid == ctx.correlation_id
    assert env.causationid == ctx.causation_id
