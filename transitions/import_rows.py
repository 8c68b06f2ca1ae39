"""Reading import rows, the layer below the roster and staff formats: CSV text or JSON objects
to records of cells by column name, and typed cell readers that collect problems per column.

Pure: no I/O. Line numbers: for CSV, the physical line where the row starts (the header is line
1); for JSON, the 1-based position of the object in the list.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Mapping, Sequence

from transitions.model import MemberIdentifier

ID_LEN = 64  # identifier columns (member_id, staff_id, ...) in transcare.db.tables
_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # PostgreSQL refuses NUL in text; none belong here
MAX_COUNT = 100_000


class ImportFileError(ValueError):
    """The file as a whole cannot be read (no header, a required column missing, bad CSV)."""


# A record: its line, its cells by normalised column name, or why it cannot be read at all.
Record = tuple[int, dict[str, str], str | None]


def _column(name: str) -> str:
    return re.sub(r"[\s-]+", "_", name.strip().lower())


def csv_records(text: str, required: Sequence[str]) -> list[Record]:
    """Read CSV text (UTF-8 BOM, CRLF/LF/CR and quoted fields allowed).

    Raises:
        ImportFileError: no header row, a required or repeated column, or malformed CSV.
    """
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""), strict=True)
    try:
        header = [_column(name) for name in next(reader, [])]
        _check_header(header, required)
        records, start = [], reader.line_num + 1
        for cells in reader:
            if any(cell.strip() for cell in cells):
                records.append(_csv_record(start, header, cells))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise ImportFileError(f"line {reader.line_num}: not valid CSV ({exc})") from None
    return records


def _check_header(header: list[str], required: Sequence[str]) -> None:
    if not any(header):
        raise ImportFileError("no header row")
    missing = [name for name in required if name not in header]
    if missing:
        raise ImportFileError(f"missing column{'s' * (len(missing) > 1)}: {', '.join(missing)}")
    repeated = sorted({name for name in header if name and header.count(name) > 1})
    if repeated:
        raise ImportFileError(f"column named twice in the header: {', '.join(repeated)}")


def _csv_record(line: int, header: list[str], cells: list[str]) -> Record:
    if len(cells) > len(header):
        return line, {}, f"row has {len(cells)} fields, the header {len(header)} (unquoted comma?)"
    return line, dict(zip(header, cells, strict=False)), None


LIST_COLUMNS = ("identifiers",)  # the columns whose CSV cell is a `;`-separated list


def json_records(objects: Sequence[object]) -> list[Record]:
    """Read a list of JSON objects; values may be strings, numbers, booleans or null (and a
    list of strings, joined with ``;``, for a list column such as ``identifiers``). As in a
    CSV header, two keys naming one column (``member_id`` and ``Member ID``) are an error:
    for the row, here, rather than one of them silently winning."""
    records: list[Record] = []
    for line, obj in enumerate(objects, 1):
        if not isinstance(obj, Mapping):
            records.append((line, {}, "not a JSON object"))
            continue
        names = [_column(str(k)) for k in obj]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            records.append((line, {}, f"column named twice in the object: {', '.join(repeated)}"))
            continue
        cells = {name: _cell(v, name in LIST_COLUMNS) for name, v in zip(names, obj.values(), strict=True)}
        bad = sorted(k for k, v in cells.items() if v is None)
        problems = [f"{k}: expected a list of strings" if k in LIST_COLUMNS
                    else f"{k}: expected a string, number or boolean" for k in bad]
        records.append((line, {k: v or "" for k, v in cells.items()}, "; ".join(problems) or None))
    return records


def _cell(value: object, list_column: bool) -> str | None:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str | int | float):
        return str(value)
    if list_column and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ";".join(value)
    return None


class Row:
    """One record's cells; every reader notes a problem (naming the column) and returns a
    default instead of raising, so a row reports all its problems at once."""

    def __init__(self, cells: Mapping[str, str]) -> None:
        self._cells = cells
        self.problems: list[str] = []

    def fail(self, column: str, what: str) -> None:
        self.problems.append(f"{column}: {what}")

    def text(self, column: str, limit: int = ID_LEN, required: bool = False) -> str:
        value = self._cells.get(column, "").strip()
        if required and not value:
            self.fail(column, "required, but blank or missing")
        elif _CONTROL.search(value):
            self.fail(column, "contains a control character (a line break or tab?)")
        elif len(value) > limit:
            self.fail(column, f"longer than {limit} characters")
        return value

    def choice(self, column: str, options: Sequence[str], default: str, echo: bool = True,
               required: bool = False) -> str:
        raw = self._cells.get(column, "").strip()
        value = next((o for o in options if o.lower() == raw.lower()), None)
        if required and not raw:
            self.fail(column, "required, but blank or missing")
        elif value is None and raw:
            shown = f"{raw!r} is " if echo and len(raw) <= 40 else ""
            self.fail(column, f"{shown}not one of {', '.join(options)}")
        return value or default

    def date(self, column: str) -> dt.date | None:
        raw = self._cells.get(column, "").strip()
        if not raw:
            return None
        try:
            if _DATE.fullmatch(raw):
                return dt.date.fromisoformat(raw)
        except ValueError:
            pass
        self.fail(column, "not a date in YYYY-MM-DD form")
        return None

    def flag(self, column: str, default: bool) -> bool:
        raw = self._cells.get(column, "").strip().lower()
        if raw in _TRUE or raw in _FALSE:
            return raw in _TRUE
        if raw:
            self.fail(column, f"{raw[:20]!r} is not true or false")
        return default

    def count(self, column: str) -> int:
        raw = self._cells.get(column, "").strip()
        if raw.isascii() and raw.isdigit() and len(raw) <= 6 and int(raw) <= MAX_COUNT:
            return int(raw)
        if raw:
            self.fail(column, f"not a whole number from 0 to {MAX_COUNT}")
        return 0

    def period(self, start: str, end: str) -> tuple[dt.date | None, dt.date | None]:
        first, last = self.date(start), self.date(end)
        if first and last and last < first:
            self.fail(end, f"before {start}")
        return first, last

    def identifiers(self, column: str) -> tuple[MemberIdentifier, ...]:
        found: dict[MemberIdentifier, None] = {}
        entries = [e.strip() for e in self._cells.get(column, "").split(";")]
        for n, entry in enumerate((e for e in entries if e), 1):
            value, at, authority = entry.rpartition("@")
            ident = MemberIdentifier.of(value, authority)
            if not (at and ident.value and ident.authority) or _CONTROL.search(entry):
                self.fail(column, f"entry {n} is not value@authority")
            elif len(ident.value) > ID_LEN or len(ident.authority) > ID_LEN:
                self.fail(column, f"entry {n} is longer than {ID_LEN} characters")
            else:
                found[ident] = None
        return tuple(found)
