"""HL7 v2 escape sequences (section 2.7) with default and custom delimiters."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adt_listener.hl7.er7 import DEFAULT_DELIMITERS, Delimiters
from adt_listener.hl7.escapes import escape, unescape

# MSH#!@%*  : field '#', component '!', repetition '@', escape '%', subcomponent '*'
CUSTOM = Delimiters("#", "!", "@", "%", "*")
# MSH|^~\&# : v2.7 truncation character '#'
TRUNCATING = Delimiters("|", "^", "~", "\\", "&", "#")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a\\F\\b", "a|b"),
        ("a\\S\\b", "a^b"),
        ("a\\T\\b", "a&b"),
        ("a\\R\\b", "a~b"),
        ("a\\E\\b", "a\\b"),
        ("\\F\\\\S\\\\T\\\\R\\\\E\\", "|^&~\\"),
        ("\\X41\\", "A"),
        ("\\X4142\\", "AB"),
        ("caf\\XE9\\", "café"),  # hex data is Latin-1 bytes
        ("one\\.br\\two", "one\ntwo"),
        ("\\H\\bold\\N\\ text", "bold text"),  # highlighting dropped
        ("plain", "plain"),
        ("", ""),
    ],
)
def test_unescape_default_delimiters(raw: str, expected: str) -> None:
    assert unescape(raw, DEFAULT_DELIMITERS) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a%F%b", "a#b"),
        ("a%S%b", "a!b"),
        ("a%T%b", "a*b"),
        ("a%R%b", "a@b"),
        ("a%E%b", "a%b"),
        ("%X41%", "A"),
        ("x%.br%y", "x\ny"),
        ("%H%x%N%", "x"),
        ("a\\F\\b", "a\\F\\b"),  # backslash is plain text here
    ],
)
def test_unescape_custom_delimiters(raw: str, expected: str) -> None:
    assert unescape(raw, CUSTOM) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "abc\\F",  # unterminated
        "\\",  # lone escape character
        "a\\Q\\b",  # unknown code
        "\\X4\\",  # odd number of hex digits
        "\\XZZ\\",  # not hexadecimal
        "\\X\\",  # no hex digits
    ],
)
def test_unterminated_or_unknown_sequence_is_kept(raw: str) -> None:
    assert unescape(raw, DEFAULT_DELIMITERS) == raw


def test_truncation_escape() -> None:
    assert unescape("a\\P\\b", TRUNCATING) == "a#b"
    assert escape("a#b", TRUNCATING) == "a\\P\\b"


def test_truncation_escape_without_declared_truncation_is_kept() -> None:
    # Before v2.7 there is no truncation character (MSH-2 has 4 characters): \P\ is unknown.
    assert unescape("a\\P\\b", DEFAULT_DELIMITERS) == "a\\P\\b"


@pytest.mark.parametrize(
    ("delims", "value", "expected"),
    [
        (DEFAULT_DELIMITERS, "a|b^c~d\\e&f", "a\\F\\b\\S\\c\\R\\d\\E\\e\\T\\f"),
        (DEFAULT_DELIMITERS, "x\ny", "x\\.br\\y"),
        (CUSTOM, "a#b!c@d%e*f", "a%F%b%S%c%R%d%E%e%T%f"),
        (CUSTOM, "a|b^c", "a|b^c"),
    ],
)
def test_escape(delims: Delimiters, value: str, expected: str) -> None:
    assert escape(value, delims) == expected


_delimiters = st.sampled_from([DEFAULT_DELIMITERS, CUSTOM, TRUNCATING])
# CR is written as \.br\ and comes back as LF, so it is left out of the round trip.
_text = st.text(
    alphabet=st.characters(blacklist_characters="\r", blacklist_categories=("Cs",)), max_size=60
) | st.text(alphabet="|^~\\&#!@%*.brXFSTRE\n ", max_size=40)


@given(value=_text, delims=_delimiters)
def test_escape_round_trips_through_unescape(value: str, delims: Delimiters) -> None:
    escaped = escape(value, delims)
    for ch in (delims.field, delims.component, delims.repetition, delims.subcomponent):
        assert ch not in escaped
    assert unescape(escaped, delims) == value
