"""The program calendar: business days and due-time arithmetic in the program's time zone.

Business days are Monday to Friday except US federal holidays on their observed dates (the
``holidays`` library, e.g. July 4 2026 is a Saturday, observed Friday July 3) and the
program's closures (settings ``program_closures``). Pure: no I/O, no clock.

Conventions (docs/rules.md, "Calendar"):

- ``n`` business days after ``at`` is the same local wall-clock time on the n-th business day
  strictly after the local date of ``at``. An event on a weekend or holiday therefore counts
  from the next business day: Saturday 10:00 + 1B is Monday 10:00, the same as Friday
  10:00 + 1B. ``n = 0`` is ``at`` itself.
- A wall-clock time that does not exist on the target day (a spring-forward gap) moves
  forward by the gap (02:30 becomes 03:30); an ambiguous one (fall back) takes the first
  occurrence (``fold=0``).
- A duration offset is exact elapsed time (``P1D`` = 24 h), so across a daylight-saving change
  the wall-clock time shifts by an hour. Negative durations are allowed ("-P1D").
- Every result is an aware datetime in the program zone.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays

from followup.offsets import Offset

_MAX_SCAN = 3660  # days; a calendar with no business day in ten years is a configuration error


class ProgramCalendar:
    """Business days and offsets for one program.

    Arguments:
        time_zone: IANA zone business days are counted in (settings ``program_time_zone``).
        closures: extra non-business days (``date`` or ``YYYY-MM-DD`` text).
        country: ISO country of the public holidays (federal holidays for "US").

    Raises:
        ValueError: unknown time zone or country, or a closure that is not a date.
    """

    def __init__(self, time_zone: str, closures: Iterable[date | str] = (), country: str = "US"):
        try:
            self.zone = ZoneInfo(time_zone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {time_zone!r}") from exc
        try:
            self._holidays = holidays.country_holidays(country, observed=True)
        except NotImplementedError as exc:
            raise ValueError(f"no holiday calendar for country {country!r}") from exc
        self.closures = frozenset(_as_date(day) for day in closures)

    def is_business_day(self, day: date) -> bool:
        """Monday to Friday, not a (observed) public holiday, not a program closure."""
        return day.weekday() < 5 and day not in self._holidays and day not in self.closures

    def next_business_day(self, day: date) -> date:
        """The first business day strictly after ``day``."""
        for step in range(1, _MAX_SCAN):
            candidate = day + timedelta(days=step)
            if self.is_business_day(candidate):
                return candidate
        raise ValueError(f"no business day within {_MAX_SCAN} days after {day}")

    def local(self, at: datetime) -> datetime:
        """``at`` in the program zone. Raises ValueError for a naive datetime."""
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError(f"naive datetime {at.isoformat()}: times must carry a zone")
        return at.astimezone(self.zone)

    def add_business_days(self, at: datetime, n: int) -> datetime:
        """The same local wall-clock time on the n-th business day after the local date of
        ``at`` (see the module conventions); ``n = 0`` returns ``at`` in the program zone.

        Raises:
            ValueError: ``n`` is negative, or ``at`` is naive.
        """
        if n < 0:
            raise ValueError(f"business days cannot be negative: {n}")
        local = self.local(at)
        day = local.date()
        for _ in range(n):
            day = self.next_business_day(day)
        return local if n == 0 else self.wall_time(day, local.time())

    def add_elapsed(self, at: datetime, delta: timedelta) -> datetime:
        """``at`` plus exact elapsed time (computed in UTC), in the program zone."""
        return (self.local(at).astimezone(UTC) + delta).astimezone(self.zone)

    def add(self, at: datetime, offset: Offset) -> datetime:
        """``at`` moved by a business-day or duration offset. Raises ValueError if naive."""
        if offset.is_business:
            return self.add_business_days(at, offset.business_days)
        return self.add_elapsed(at, offset.elapsed)

    def wall_time(self, day: date, clock: time) -> datetime:
        """``clock`` on ``day`` in the program zone: a time in a spring-forward gap moves
        forward by the gap; an ambiguous time takes its first occurrence (fold=0)."""
        naive = datetime.combine(day, clock.replace(tzinfo=None, fold=0))
        return naive.replace(tzinfo=self.zone).astimezone(UTC).astimezone(self.zone)


def _as_date(day: date | str) -> date:
    if isinstance(day, datetime):
        return day.date()
    if isinstance(day, date):
        return day
    try:
        return date.fromisoformat(str(day).strip())
    except ValueError as exc:
        raise ValueError(f"program closure {day!r} is not a YYYY-MM-DD date") from exc
