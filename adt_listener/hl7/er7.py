"""ER7 (pipe-and-hat) reader: segments, fields, repetitions, components, subcomponents.

The reader is deliberately small and fast: it splits the message into segments and fields once
and splits repetitions and components only when asked. Values come back raw (escape sequences
intact) from :meth:`Message.raw` and decoded from :meth:`Message.get`.

Field numbering follows HL7: ``MSH-1`` is the field separator and ``MSH-2`` the encoding
characters, so ``MSH-9`` is ``fields[9]`` for every segment.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from adt_listener.hl7.escapes import unescape


class Er7Error(ValueError):
    """The text is not a readable ER7 message.

    Attributes:
        segment: the segment at fault (``MSH`` for header problems).
        field: the HL7 field number at fault, when one is.
    """

    def __init__(self, reason: str, segment: str = "MSH", field: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.segment = segment
        self.field = field


@dataclass(frozen=True, slots=True)
class Delimiters:
    """The separators a message declares in MSH-1 and MSH-2."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    truncation: str = ""

    @property
    def encoding_characters(self) -> str:
        """MSH-2 as it should be echoed back."""
        return (
            self.component + self.repetition + self.escape + self.subcomponent + self.truncation
        )


DEFAULT_DELIMITERS = Delimiters()
_SEGMENT_NAME = re.compile(r"^[A-Z][A-Z0-9]{2}$")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_VALID_NAMES: set[str] = set()  # names seen valid; at most 26 * 36 * 36 of them


def _valid_name(name: str) -> bool:
    """Whether ``name`` is a segment name (remembered when it is)."""
    if len(name) == 3 and _SEGMENT_NAME.match(name):
        _VALID_NAMES.add(name)
        return True
    return False


def read_delimiters(text: str) -> Delimiters:
    """Read MSH-1 and MSH-2 from the start of ``text``.

    Raises:
        Er7Error: no MSH at the start, or the encoding characters are missing, repeated
            or clash with the field separator.
    """
    if not text.startswith("MSH") or len(text) < 8:
        raise Er7Error("message does not start with an MSH segment", "MSH", None)
    sep = text[3]
    if sep.isalnum() or sep in "\r\n ":
        raise Er7Error("MSH-1 field separator is missing or invalid", "MSH", 1)
    end = text.find(sep, 4)
    line_end = min((i for i in (text.find("\r", 4), text.find("\n", 4)) if i >= 0), default=-1)
    if end < 0 or (0 <= line_end < end):
        raise Er7Error("MSH-2 encoding characters are not followed by a field", "MSH", 2)
    enc = text[4:end]
    if len(enc) < 4 or len(enc) > 5:
        raise Er7Error(f"MSH-2 encoding characters must be 4 or 5, found {len(enc)}", "MSH", 2)
    if len(set(enc)) != len(enc) or sep in enc or any(c.isalnum() for c in enc):
        raise Er7Error("MSH-2 encoding characters are repeated or invalid", "MSH", 2)
    return Delimiters(sep, enc[0], enc[1], enc[2], enc[3], enc[4] if len(enc) == 5 else "")


class Message:
    """A parsed ER7 message.

    Arguments:
        text: the decoded message text; segments separated by CR, LF or CRLF.

    Raises:
        Er7Error: the MSH is missing or its delimiters are unusable, or a segment has no name.
    """

    __slots__ = ("delimiters", "names", "_lines", "_fields", "_index")

    def __init__(self, text: str) -> None:
        if text.startswith("\ufeff"):
            text = text[1:]
        self.delimiters = read_delimiters(text)
        sep = self.delimiters.field
        # Segments are split into fields only when read: the listener reads four of them.
        lines = text.split("\r") if "\n" not in text else _LINE_BREAK.split(text)
        self._lines: list[str] = [ln for ln in lines if ln and not ln.isspace()]
        self.names: list[str] = []
        self._index: dict[str, list[int]] = {}
        for n, line in enumerate(self._lines):
            name = line[:3]  # the text before the first separator, when that is 3 characters
            if (len(line) > 3 and line[3] != sep) or (
                    name not in _VALID_NAMES and not _valid_name(name)):
                # The location names a segment only when it looks like one: a stray line of text
                # must not end up in logs, metrics or reasons.
                name = line.partition(sep)[0]
                where = name[:3] if _SEGMENT_NAME.match(name[:3]) else "?"
                raise Er7Error(f"segment {n + 1} has no valid segment name", where)
            self._index.setdefault(name, []).append(n)
            self.names.append(name)
        self._fields: list[list[str] | None] = [None] * len(self._lines)

    def _split(self, n: int) -> list[str]:
        fields = self._fields[n]
        if fields is None:
            sep = self.delimiters.field
            fields = self._lines[n].split(sep)
            if n == 0:
                # MSH-1 is the separator itself; shift so MSH-n is fields[n].
                fields.insert(1, sep)
            self._fields[n] = fields
        return fields

    @property
    def segments(self) -> list[list[str]]:
        """Every segment as its list of fields (``fields[0]`` is the name)."""
        return [self._split(n) for n in range(len(self._lines))]

    def search(self, pattern: re.Pattern[str]) -> re.Match[str] | None:
        """The first match of ``pattern`` within any one segment's text."""
        for line in self._lines:
            found = pattern.search(line)
            if found:
                return found
        return None

    def has(self, segment: str) -> bool:
        return segment in self._index

    def count(self, segment: str) -> int:
        return len(self._index.get(segment, ()))

    def segment(self, name: str, occurrence: int = 0) -> list[str] | None:
        """The fields of the ``occurrence``-th segment called ``name``, or None."""
        idx = self._index.get(name)
        if not idx or occurrence >= len(idx):
            return None
        return self._split(idx[occurrence])

    def all(self, name: str) -> Iterator[list[str]]:
        for i in self._index.get(name, ()):
            yield self._split(i)

    def field(self, segment: str, number: int, occurrence: int = 0) -> str:
        """The raw text of a whole field (all repetitions), '' when absent."""
        seg = self.segment(segment, occurrence)
        if seg is None or number >= len(seg):
            return ""
        if segment == "MSH" and number == 2:
            return seg[2]
        return seg[number]

    def repetitions(self, segment: str, number: int, occurrence: int = 0) -> list[str]:
        """Each repetition of a field, raw; [] when absent or empty."""
        raw = self.field(segment, number, occurrence)
        if not raw:
            return []
        if segment == "MSH" and number in (1, 2):
            return [raw]
        return raw.split(self.delimiters.repetition)

    def raw(
        self, segment: str, number: int, component: int = 1, sub: int = 1, *, rep: int = 0,
        occurrence: int = 0,
    ) -> str:
        """One leaf value, raw (escapes intact); '' when absent."""
        if segment == "MSH" and number in (1, 2):
            # MSH-1 and MSH-2 hold the delimiters themselves: never split into components.
            reps = self.repetitions(segment, number, occurrence)
            return reps[0] if reps and rep == 0 and component == 1 and sub == 1 else ""
        # The mapping reads about 40 leaves per message: segment, field and repetition
        # lookups are done here directly rather than through field() and repetitions().
        idx = self._index.get(segment)
        if not idx or occurrence >= len(idx):
            return ""
        n = idx[occurrence]
        fields = self._fields[n] or self._split(n)
        if number >= len(fields):
            return ""
        value = fields[number]
        if not value:
            return ""
        d = self.delimiters
        if d.repetition in value:
            reps = value.split(d.repetition)
            if rep >= len(reps):
                return ""
            value = reps[rep]
        elif rep:
            return ""
        if component != 1 or sub != 1 or d.component in value or d.subcomponent in value:
            return self.component(value, component, sub)
        return value

    def get(
        self, segment: str, number: int, component: int = 1, sub: int = 1, *, rep: int = 0,
        occurrence: int = 0,
    ) -> str:
        """One leaf value with escape sequences decoded; '' when absent.

        The HL7 explicit null ``""`` is returned as ''.
        """
        return self.decode(self.raw(segment, number, component, sub, rep=rep,
                                    occurrence=occurrence))

    def component(self, value: str, component: int = 1, sub: int = 1) -> str:
        """Component ``component`` (1-based) and subcomponent ``sub`` of a raw value."""
        d = self.delimiters
        comps = value.split(d.component) if d.component in value else [value]
        if component > len(comps):
            return ""
        comp = comps[component - 1]
        if d.subcomponent in comp:
            subs = comp.split(d.subcomponent)
            return subs[sub - 1] if sub <= len(subs) else ""
        return comp if sub == 1 else ""

    def decode(self, value: str) -> str:
        """Decode escape sequences in a leaf value; the explicit null becomes ''."""
        if value == '""':
            return ""
        if self.delimiters.escape in value:
            return unescape(value, self.delimiters)
        return value
