"""HL7 DTM/TS/DT parsing: precision, offsets, facility-zone localisation, DST, errors."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adt_listener.hl7.timestamps import TimestampError, parse_hl7_date, parse_hl7_datetime

NY = ZoneInfo("America/New_York")
UTC = ZoneInfo("UTC")


@pytest.mark.parametrize(
    ("value", "wall", "offset"),
    [
        # precision: missing parts are the start of the period
        ("2024", datetime(2024, 1, 1), timedelta(hours=-5)),
        ("202407", datetime(2024, 7, 1), timedelta(hours=-4)),
        ("20240715", datetime(2024, 7, 15), timedelta(hours=-4)),
        ("2024071513", datetime(2024, 7, 15, 13), timedelta(hours=-4)),
        ("202407151330", datetime(2024, 7, 15, 13, 30), timedelta(hours=-4)),
        ("20240715133045", datetime(2024, 7, 15, 13, 30, 45), timedelta(hours=-4)),
        ("20240115133045", datetime(2024, 1, 15, 13, 30, 45), timedelta(hours=-5)),
        # fractional seconds, 1 to 4 digits
        ("20240715133045.1", datetime(2024, 7, 15, 13, 30, 45, 100000), timedelta(hours=-4)),
        ("20240715133045.1234", datetime(2024, 7, 15, 13, 30, 45, 123400), timedelta(hours=-4)),
        # tolerated sender quirk: fraction without the dot (Mirth samples)
        ("20110613122406637", datetime(2011, 6, 13, 12, 24, 6, 637000), timedelta(hours=-4)),
        # explicit offsets are kept as written
        ("20240715133045+0215", datetime(2024, 7, 15, 13, 30, 45), timedelta(hours=2, minutes=15)),
        ("20240715133045-0500", datetime(2024, 7, 15, 13, 30, 45), timedelta(hours=-5)),
        ("20240715133045.5+0000", datetime(2024, 7, 15, 13, 30, 45, 500000), timedelta(0)),
        ("20240715+0530", datetime(2024, 7, 15), timedelta(hours=5, minutes=30)),
        ("2024-0330", datetime(2024, 1, 1), timedelta(hours=-3, minutes=-30)),
        # TS with a precision component, surrounding blanks
        ("20240715133045^S", datetime(2024, 7, 15, 13, 30, 45), timedelta(hours=-4)),
        (" 20240715133045 ", datetime(2024, 7, 15, 13, 30, 45), timedelta(hours=-4)),
        # DST, America/New_York: spring forward 2024-03-10 02:00 -> 03:00
        ("20240310015959", datetime(2024, 3, 10, 1, 59, 59), timedelta(hours=-5)),
        ("20240310023000", datetime(2024, 3, 10, 3, 30), timedelta(hours=-4)),  # gap: forward
        ("20240310020000", datetime(2024, 3, 10, 3, 0), timedelta(hours=-4)),  # gap start
        ("20240310030000", datetime(2024, 3, 10, 3, 0), timedelta(hours=-4)),
        ("20240310023000-0500", datetime(2024, 3, 10, 2, 30), timedelta(hours=-5)),  # as written
        # DST, fall back 2024-11-03 02:00 -> 01:00: the repeated hour takes fold=0 (EDT)
        ("20241103005959", datetime(2024, 11, 3, 0, 59, 59), timedelta(hours=-4)),
        ("20241103013000", datetime(2024, 11, 3, 1, 30), timedelta(hours=-4)),
        ("20241103020000", datetime(2024, 11, 3, 2, 0), timedelta(hours=-5)),
    ],
)
def test_parse_datetime(value: str, wall: datetime, offset: timedelta) -> None:
    parsed = parse_hl7_datetime(value, NY)
    assert parsed is not None
    assert parsed.tzinfo is not None
    assert parsed.replace(tzinfo=None) == wall
    assert parsed.utcoffset() == offset


@pytest.mark.parametrize(
    ("value", "instant"),
    [
        ("20240310023000", datetime(2024, 3, 10, 7, 30, tzinfo=UTC)),
        ("20241103013000", datetime(2024, 11, 3, 5, 30, tzinfo=UTC)),
        ("20240715133045+0215", datetime(2024, 7, 15, 11, 15, 45, tzinfo=UTC)),
    ],
)
def test_parse_datetime_instant(value: str, instant: datetime) -> None:
    assert parse_hl7_datetime(value, NY) == instant


def test_local_value_uses_the_facility_zone() -> None:
    assert parse_hl7_datetime("20240715120000", NY) == datetime(2024, 7, 15, 16, tzinfo=UTC)
    assert parse_hl7_datetime("20240715120000", UTC) == datetime(2024, 7, 15, 12, tzinfo=UTC)


@pytest.mark.parametrize("value", ["", "   ", "^S"])
def test_empty_is_none(value: str) -> None:
    assert parse_hl7_datetime(value, NY) is None
    assert parse_hl7_date(value) is None


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("2023X", "not an HL7 date/time"),
        ("abc", "not an HL7 date/time"),
        ("202", "not an HL7 date/time"),
        ("2024071", "not an HL7 date/time"),
        ("2024-07-15", "not an HL7 date/time"),
        ("20240715 1330", "not an HL7 date/time"),
        ("20240715133045.12345", "not an HL7 date/time"),
        ("20240715.5", "not an HL7 date/time"),
        ("20240715+05", "not an HL7 date/time"),
        ("２０２４", "not an HL7 date/time"),
        ("0000", "out of range"),
        ("20241301", "out of range"),
        ("20240230", "out of range"),
        ("2024071524", "out of range"),
        ("202407151360", "out of range"),
        ("43865896", "out of range"),
        # the common all-digit shapes are read without the pattern: the same complaints
        ("20240715250000", "out of range"),
        ("20240715133060", "out of range"),
        ("202402301200", "out of range"),
        ("２０２４０７１５", "not an HL7 date/time"),
        ("2024071513304²", "not an HL7 date/time"),
        ("20240715+2500", "UTC offset"),
        ("20240715-0160", "UTC offset"),
    ],
)
def test_garbage_raises(value: str, complaint: str) -> None:
    with pytest.raises(TimestampError, match=complaint) as info:
        parse_hl7_datetime(value, NY)
    assert value.strip() not in str(info.value), "the value is never repeated (PHI)"
    assert isinstance(info.value, ValueError)
    with pytest.raises(TimestampError, match=complaint):
        parse_hl7_date(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("19800101", date(1980, 1, 1)),
        ("198007", date(1980, 7, 1)),
        ("1980", date(1980, 1, 1)),
        ("10131113", date(1013, 11, 13)),
        ("198808181126+0215", date(1988, 8, 18)),  # DTM: the date as written, offset ignored
        ("19641028000000-0600", date(1964, 10, 28)),
        ("19641028235959+1400", date(1964, 10, 28)),
        ("19800101^D", date(1980, 1, 1)),
    ],
)
def test_parse_date(value: str, expected: date) -> None:
    assert parse_hl7_date(value) == expected


@given(st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 12, 31)))
def test_local_times_round_trip_or_move_forward(naive: datetime) -> None:
    """Any local time parses; it keeps its wall clock unless it falls in a DST gap."""
    naive = naive.replace(microsecond=0)
    parsed = parse_hl7_datetime(naive.strftime("%Y%m%d%H%M%S"), NY)
    assert parsed is not None
    wall = parsed.replace(tzinfo=None)
    assert wall == naive or timedelta(0) < wall - naive <= timedelta(hours=1)
    assert parsed.fold == 0


@given(
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 12, 31)),
    st.integers(min_value=-12 * 60, max_value=14 * 60),
)
def test_offset_values_keep_their_instant(naive: datetime, offset_minutes: int) -> None:
    naive = naive.replace(microsecond=0)
    sign = "-" if offset_minutes < 0 else "+"
    hh, mm = divmod(abs(offset_minutes), 60)
    text = f"{naive:%Y%m%d%H%M%S}{sign}{hh:02d}{mm:02d}"
    expected = naive.replace(tzinfo=timezone(timedelta(minutes=offset_minutes)))
    assert parse_hl7_datetime(text, NY) == expected


def test_a_time_at_the_end_of_the_calendar_is_an_error_not_a_crash() -> None:
    # 9999-12-31 23:59:59 in New York is past datetime.max in UTC (OverflowError).
    with pytest.raises(TimestampError, match="supported range"):
        parse_hl7_datetime("99991231235959", NY)


def test_a_repeated_value_is_read_in_each_zone_and_an_invalid_one_fails_each_time() -> None:
    """Parsed times are cached per value and zone; errors are never cached."""
    new_york, chicago = ZoneInfo("America/New_York"), ZoneInfo("America/Chicago")
    first = parse_hl7_datetime("202603021200", new_york)
    assert parse_hl7_datetime("202603021200", new_york) == first
    assert parse_hl7_datetime("202603021200", chicago) - first == timedelta(hours=1)
    for _ in range(2):
        with pytest.raises(TimestampError):
            parse_hl7_datetime("20261340", new_york)
