"""Due-time offsets of the rule table: business days ("2B") or ISO 8601 durations ("P14D").

Pure value objects. A business-day offset is counted on the program calendar
(:mod:`followup.calendar`); a duration is exact elapsed time (``P1D`` is 24 hours, also across a
daylight-saving change). Calendar years and months are not fixed lengths and are rejected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Literal

OffsetKind = Literal["business", "elapsed"]

_HINT = '(use "2B" or an ISO 8601 duration like "P14D")'
_BUSINESS = re.compile(r"(?P<sign>[-+]?)(?P<n>\d+)B")
_DURATION = re.compile(
    r"(?P<sign>[-+]?)P(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?"
    r"(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:[.,]\d+)?)S)?)?"
)
_YEARS_MONTHS = re.compile(r"[-+]?P(?:\d+Y)?(?:\d+M)?(?:\d+W)?(?:\d+D)?(?:T.*)?")


@dataclass(frozen=True)
class Offset:
    """A due offset: ``business_days`` on the program calendar, or an exact ``elapsed`` time.

    Build with :meth:`business`, :meth:`duration` or :func:`parse_offset`; ``str()`` gives the
    canonical text ("2B", "P14D", "-P1D", "PT4H", "P1DT2H", "PT0S").
    """

    kind: OffsetKind
    business_days: int = 0
    elapsed: timedelta = timedelta(0)

    @classmethod
    def business(cls, days: int) -> Offset:
        """``days`` business days (>= 0). Raises ValueError for a negative count."""
        if days < 0:
            raise ValueError(f"business days cannot be negative: {days}")
        return cls("business", business_days=days)

    @classmethod
    def duration(cls, elapsed: timedelta) -> Offset:
        return cls("elapsed", elapsed=elapsed)

    @property
    def is_business(self) -> bool:
        return self.kind == "business"

    @property
    def is_zero(self) -> bool:
        return self.business_days == 0 and self.elapsed == timedelta(0)

    @property
    def is_negative(self) -> bool:
        return self.elapsed < timedelta(0)

    def __str__(self) -> str:
        if self.is_business:
            return f"{self.business_days}B"
        return _iso_duration(self.elapsed)


def parse_offset(text: str) -> Offset:
    """Parse "2B" (business days), "0" (zero) or an ISO 8601 duration ("P14D", "PT4H",
    "PT30S", "P1DT2H", "P2W", "-P1D"). Letters may be lower case.

    Raises:
        ValueError: the text is none of these; the message quotes it and shows the forms.
    """
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not an offset {_HINT}")
    clean = text.strip().upper()
    if clean == "0":
        return Offset.duration(timedelta(0))
    business = _BUSINESS.fullmatch(clean)
    if business:
        if business["sign"] == "-":
            raise ValueError(f'"{text}": business-day offsets cannot be negative '
                             '(use a duration such as "-P1D")')
        return Offset.business(int(business["n"]))
    return Offset.duration(_parse_duration(text, clean))


def _parse_duration(text: str, clean: str) -> timedelta:
    match = _DURATION.fullmatch(clean)
    parts = match.groupdict() if match else {}
    if not match or clean.endswith(("P", "T")) or not any(parts[k] for k in "wdhms"):
        if _YEARS_MONTHS.fullmatch(clean) and ("Y" in clean or "M" in clean.split("T")[0]):
            raise ValueError(f'"{text}": years and months are not fixed lengths; use days '
                             '(e.g. "P30D")')
        raise ValueError(f'"{text}" is not an offset {_HINT}')
    seconds = Decimal((parts["s"] or "0").replace(",", "."))
    value = timedelta(weeks=int(parts["w"] or 0), days=int(parts["d"] or 0),
                      hours=int(parts["h"] or 0), minutes=int(parts["m"] or 0),
                      seconds=float(seconds))
    return -value if parts["sign"] == "-" else value


def _iso_duration(value: timedelta) -> str:
    """Canonical ISO 8601 text of an exact duration: days, then hours, minutes, seconds."""
    sign, value = ("-", -value) if value < timedelta(0) else ("", value)
    days, rest = value.days, value - timedelta(days=value.days)
    hours, rest_s = divmod(rest.total_seconds(), 3600)
    minutes, seconds = divmod(rest_s, 60)
    time = "".join(f"{int(n)}{u}" for n, u in ((hours, "H"), (minutes, "M")) if n)
    if seconds:
        time += f"{seconds:g}S"
    if not days and not time:
        return "PT0S"
    return f"{sign}P{f'{days}D' if days else ''}{'T' + time if time else ''}"
