"""The program calendar: business days (weekends, 2026 US federal holidays on their observed
dates, program closures), business-day and duration offsets, time zones and DST days."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from followup.calendar import ProgramCalendar
from followup.offsets import parse_offset

NY = ZoneInfo("America/New_York")
CAL = ProgramCalendar("America/New_York")


def ny(text: str, fold: int = 0) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=NY, fold=fold)


@pytest.mark.parametrize(
    ("day", "business"),
    [
        ("2026-03-02", True),  # Monday
        ("2026-03-06", True),  # Friday
        ("2026-03-07", False),  # Saturday
        ("2026-03-08", False),  # Sunday (DST starts)
        ("2026-01-01", False),  # New Year's Day
        ("2026-01-19", False),  # Martin Luther King Jr. Day
        ("2026-02-16", False),  # Washington's Birthday
        ("2026-05-25", False),  # Memorial Day
        ("2026-06-19", False),  # Juneteenth (Friday)
        ("2026-07-03", False),  # Independence Day observed (July 4 is a Saturday)
        ("2026-07-04", False),  # Independence Day itself, a Saturday
        ("2026-07-06", True),  # the Monday after is a business day
        ("2026-09-07", False),  # Labor Day
        ("2026-10-12", False),  # Columbus Day
        ("2026-11-11", False),  # Veterans Day (Wednesday)
        ("2026-11-26", False),  # Thanksgiving
        ("2026-11-27", True),  # the day after Thanksgiving is no federal holiday
        ("2026-12-24", True),  # Christmas Eve is no federal holiday
        ("2026-12-25", False),  # Christmas Day
        ("2027-06-18", False),  # Juneteenth 2027 observed (June 19 is a Saturday)
        ("2027-12-31", False),  # New Year's Day 2028 observed on Friday Dec 31 2027
    ],
)
def test_business_days(day: str, business: bool) -> None:
    assert CAL.is_business_day(date.fromisoformat(day)) is business


def test_program_closures_are_not_business_days() -> None:
    cal = ProgramCalendar("America/New_York", [date(2026, 3, 9), "2026-12-24"])
    assert not cal.is_business_day(date(2026, 3, 9))
    assert not cal.is_business_day(date(2026, 12, 24))
    assert cal.add_business_days(ny("2026-03-06T16:00"), 1) == ny("2026-03-10T16:00")


@pytest.mark.parametrize(
    ("at", "n", "expected"),
    [
        (ny("2026-03-02T09:00"), 1, ny("2026-03-03T09:00")),  # Monday -> Tuesday
        (ny("2026-03-02T09:00"), 5, ny("2026-03-09T09:00")),  # a working week
        (ny("2026-03-06T16:00"), 1, ny("2026-03-09T16:00")),  # Friday -> Monday, across DST
        (ny("2026-03-07T10:00"), 1, ny("2026-03-09T10:00")),  # Saturday counts from Monday
        (ny("2026-03-08T03:30"), 1, ny("2026-03-09T03:30")),  # on the DST day itself
        (ny("2026-03-07T10:00"), 2, ny("2026-03-10T10:00")),
        (ny("2026-09-04T15:30"), 1, ny("2026-09-08T15:30")),  # Friday before Labor Day
        (ny("2026-09-04T15:30"), 2, ny("2026-09-09T15:30")),
        (ny("2026-07-02T14:00"), 1, ny("2026-07-06T14:00")),  # July 3 observed holiday
        (ny("2026-07-03T10:00"), 1, ny("2026-07-06T10:00")),  # on the holiday itself
        (ny("2026-11-25T08:00"), 1, ny("2026-11-27T08:00")),  # over Thanksgiving
        (ny("2026-12-24T12:00"), 1, ny("2026-12-28T12:00")),  # over Christmas
        (ny("2026-12-31T12:00"), 1, ny("2027-01-04T12:00")),  # over New Year 2027
        (ny("2026-10-30T09:00"), 1, ny("2026-11-02T09:00")),  # Friday EDT -> Monday EST
        (ny("2026-11-01T01:30", fold=1), 1, ny("2026-11-02T01:30")),  # second 01:30 (EST)
        (ny("2026-03-07T10:00"), 0, ny("2026-03-07T10:00")),  # zero: the event itself
    ],
)
def test_add_business_days_keeps_the_wall_clock_time(at: datetime, n: int, expected: datetime) -> None:
    result = CAL.add_business_days(at, n)
    assert result == expected
    assert (result.hour, result.minute) == (at.hour, at.minute)
    assert result.tzinfo == NY


@pytest.mark.parametrize(
    ("zone", "expected"),
    [
        # Friday 23:00 in Los Angeles is already Saturday 02:00 in New York: the local date
        # decides which day the count starts from, the local time is kept.
        ("America/Los_Angeles", "2026-03-09T23:00:00-07:00"),
        ("America/New_York", "2026-03-09T02:00:00-04:00"),
        ("UTC", "2026-03-09T07:00:00+00:00"),
    ],
)
def test_business_days_count_in_the_program_zone(zone: str, expected: str) -> None:
    at = datetime(2026, 3, 7, 7, 0, tzinfo=UTC)  # Fri 23:00 PST, Sat 02:00 EST
    result = ProgramCalendar(zone).add_business_days(at, 1)
    assert result.isoformat() == expected
    assert result.tzinfo == ZoneInfo(zone)


def test_nonexistent_time_moves_forward_and_ambiguous_takes_the_first() -> None:
    # Cairo changes clocks on weekdays: Friday 2026-04-24 00:00 -> 01:00; Thursday
    # 2026-10-29 24:00 -> 23:00 (23:00-24:00 twice).
    cairo = ProgramCalendar("Africa/Cairo")
    zone = ZoneInfo("Africa/Cairo")
    gap = cairo.add_business_days(datetime(2026, 4, 23, 0, 30, tzinfo=zone), 1)
    assert gap.isoformat() == "2026-04-24T01:30:00+03:00"
    twice = cairo.add_business_days(datetime(2026, 10, 28, 23, 30, tzinfo=zone), 1)
    assert twice.isoformat() == "2026-10-29T23:30:00+03:00" and twice.fold == 0


@pytest.mark.parametrize(
    ("at", "offset", "expected", "elapsed"),
    [
        (ny("2026-03-07T12:00"), "P1D", "2026-03-08T13:00:00-04:00", timedelta(days=1)),
        (ny("2026-03-08T00:30"), "PT4H", "2026-03-08T05:30:00-04:00", timedelta(hours=4)),
        (ny("2026-10-31T12:00"), "P1D", "2026-11-01T11:00:00-05:00", timedelta(days=1)),
        (ny("2026-11-01T00:30"), "PT2H", "2026-11-01T01:30:00-05:00", timedelta(hours=2)),
        (ny("2026-03-08T12:00"), "-P1D", "2026-03-07T11:00:00-05:00", timedelta(days=-1)),
        (ny("2026-09-04T15:30"), "P2D", "2026-09-06T15:30:00-04:00", timedelta(days=2)),
        (ny("2026-09-04T15:30"), "PT30S", "2026-09-04T15:30:30-04:00", timedelta(seconds=30)),
        (ny("2026-09-04T15:30"), "P1DT2H", "2026-09-05T17:30:00-04:00", timedelta(hours=26)),
        (ny("2026-09-04T15:30"), "0", "2026-09-04T15:30:00-04:00", timedelta(0)),
    ],
)
def test_durations_are_exact_elapsed_time(at: datetime, offset: str, expected: str,
                                          elapsed: timedelta) -> None:
    result = CAL.add(at, parse_offset(offset))
    assert result.isoformat() == expected
    assert result.astimezone(UTC) - at.astimezone(UTC) == elapsed  # not wall-clock
    assert result.tzinfo == NY


def test_add_takes_business_offsets_and_converts_utc_input() -> None:
    at = datetime(2026, 9, 4, 19, 30, tzinfo=UTC)  # Friday 15:30 EDT
    assert CAL.add(at, parse_offset("2B")) == ny("2026-09-09T15:30")
    assert CAL.add(at, parse_offset("0B")).tzinfo == NY


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: CAL.add_business_days(ny("2026-03-02T09:00"), -1), "cannot be negative"),
        (lambda: CAL.add_business_days(datetime(2026, 3, 2, 9), 1), "naive datetime"),
        (lambda: CAL.add(datetime(2026, 3, 2, 9), parse_offset("P1D")), "naive datetime"),
        (lambda: ProgramCalendar("Mars/Olympus"), "unknown time zone 'Mars/Olympus'"),
        (lambda: ProgramCalendar("America/New_York", ["2026-13-01"]), "'2026-13-01'"),
        (lambda: ProgramCalendar("America/New_York", country="XX"), "country 'XX'"),
    ],
)
def test_errors_say_what_is_wrong(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]


@given(
    start=st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31)),
    a=st.integers(min_value=1, max_value=15),
    b=st.integers(min_value=0, max_value=15),
)
def test_business_days_compose(start: datetime, a: int, b: int) -> None:
    at = start.replace(tzinfo=NY)
    assert CAL.add_business_days(CAL.add_business_days(at, a), b) == CAL.add_business_days(at, a + b)
    assert CAL.is_business_day(CAL.add_business_days(at, a).date())
