"""HL7 v2 date and time values (DTM, TS, DT) parsed into Python datetimes and dates.

Pure functions; nothing here reads the clock or the environment. The accepted shape is

    YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]

with surrounding blanks ignored. A TS handed over whole (``value^precision``, HL7 2.3-2.5) is
read by its first component; callers holding a :class:`~adt_listener.hl7.er7.Message` should
pass component 1 themselves, since the message may use another component separator.

One sender quirk is tolerated: fractional seconds written without the dot
(``20110613122406637``, as Mirth's sample feeds do) are read as ``.637``.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo

_SHAPE = "YYYY[MM[DD[HH[MM[SS[.S{1,4}]]]]]][+/-ZZZZ]"
_DTM = re.compile(
    r"(?P<year>\d{4})"
    r"(?:(?P<month>\d{2})(?:(?P<day>\d{2})(?:(?P<hour>\d{2})(?:(?P<minute>\d{2})"
    r"(?:(?P<second>\d{2})(?:\.?(?P<fraction>\d{1,4}))?)?)?)?)?)?"
    r"(?P<offset>[+-]\d{4})?",
    re.ASCII,
)


class TimestampError(ValueError):
    """A value is not a valid HL7 date or time.

    The message says what is wrong in general terms and never repeats the value: it ends up in
    dead-letter reasons shown to analysts, and a birth date is PHI.
    """


def parse_hl7_datetime(value: str, tz: ZoneInfo) -> datetime | None:
    """Parse an HL7 DTM/TS value into an aware datetime.

    Missing parts default to the start of the period (``2013`` is 2013-01-01 00:00). A value with
    a UTC offset keeps that offset. A value without one is local time in the facility zone
    ``tz``, resolved deterministically:

    * an ambiguous time (the repeated hour when clocks go back) takes the first occurrence,
      ``fold=0`` (01:30 on 2024-11-03 in New York is 01:30-04:00);
    * a nonexistent time (the skipped hour when clocks go forward) is shifted forward by the
      length of the gap (02:30 on 2024-03-10 in New York becomes 03:30-04:00).

    Arguments:
        value: the field text, escapes already decoded; ``''`` (or blanks) means no value.
        tz: the facility time zone used when the value carries no offset.

    Returns:
        The aware datetime, or None for an empty value.

    Raises:
        TimestampError: the value does not have the HL7 shape, or a part is out of range
            (month 13, 31 February, hour 24, offset +2500).
    """
    text = _first_component(value)
    if not text:
        return None
    return _datetime(text, tz)


@lru_cache(maxsize=8192)
def _datetime(text: str, tz: ZoneInfo) -> datetime:
    """Cached: a feed repeats its times (MSH-7 and EVN-2, a visit's PV1-44 in each of its
    messages), and resolving a local time costs two zone conversions. Datetimes are immutable;
    an invalid value raises every time (exceptions are not cached)."""
    naive, offset = _parse(text)
    if offset is not None:
        return naive.replace(tzinfo=offset)
    try:
        return localise(naive, tz)
    except OverflowError as exc:  # year 9999 near the end of the calendar
        raise TimestampError("the time is out of the supported range") from exc


def parse_hl7_date(value: str) -> date | None:
    """Parse an HL7 DT value (``YYYY[MM[DD]]``), or a DTM, into a date.

    A DTM is cut to its date as written: the offset, if any, is not applied, so a birth date
    ``198808181126+0215`` is 1988-08-18.

    Returns:
        The date, or None for an empty value.

    Raises:
        TimestampError: as :func:`parse_hl7_datetime`.
    """
    text = _first_component(value)
    if not text:
        return None
    naive, _ = _parse(text)
    return naive.date()


def localise(naive: datetime, tz: ZoneInfo) -> datetime:
    """Resolve a naive local time in ``tz``: fold=0 when ambiguous, shifted forward in a gap.

    The result carries the fixed UTC offset in force (``timezone(utcoffset)``), not ``tz``
    itself: Python never finds an ambiguous ZoneInfo time equal to a time in another zone
    (PEP 495), which would make the same instant compare unequal downstream.
    """
    aware = naive.replace(tzinfo=tz, fold=0)
    round_trip = aware.astimezone(UTC).astimezone(tz)
    if round_trip.replace(tzinfo=None) != naive:
        aware = round_trip  # nonexistent local time: the wall clock after the gap
    offset = aware.utcoffset()
    assert offset is not None  # a ZoneInfo always has one
    return aware.replace(tzinfo=_fixed(offset))


@lru_cache(maxsize=256)
def _fixed(offset: timedelta) -> timezone:
    """One ``timezone`` object per UTC offset (a feed's zone has two or three)."""
    return timezone(offset)


def _first_component(value: str) -> str:
    return value.split("^", 1)[0].strip()


def _parse(text: str) -> tuple[datetime, timezone | None]:
    if len(text) in (8, 12, 14) and text.isascii() and text.isdigit():
        # The common shapes (date, minutes, seconds; no fraction, no offset), read without
        # the regular expression: the same parts, the same errors.
        try:
            naive = datetime(int(text[:4]), int(text[4:6]), int(text[6:8]),
                             int(text[8:10] or 0), int(text[10:12] or 0), int(text[12:14] or 0))
        except ValueError as exc:
            raise TimestampError(f"a date or time part is out of range ({exc})") from exc
        return naive, None
    match = _DTM.fullmatch(text)
    if match is None:
        raise TimestampError(f"not an HL7 date/time, expected {_SHAPE}")
    parts = match.groupdict()
    fraction = parts["fraction"] or ""
    try:
        naive = datetime(
            int(parts["year"]),
            int(parts["month"] or 1),
            int(parts["day"] or 1),
            int(parts["hour"] or 0),
            int(parts["minute"] or 0),
            int(parts["second"] or 0),
            int(fraction.ljust(6, "0")) if fraction else 0,
        )
    except ValueError as exc:
        raise TimestampError(f"a date or time part is out of range ({exc})") from exc
    return naive, _offset(parts["offset"], text)


def _offset(raw: str | None, text: str) -> timezone | None:
    if raw is None:
        return None
    hours, minutes = int(raw[1:3]), int(raw[3:5])
    if hours > 23 or minutes > 59:
        raise TimestampError("the UTC offset is out of range (hours 0-23, minutes 0-59)")
    delta = timedelta(hours=hours, minutes=minutes)
    return timezone(-delta if raw[0] == "-" else delta)
