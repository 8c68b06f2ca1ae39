"""ER7 reading: delimiters (MSH-1, MSH-2), segments, fields, repetitions, components."""

from __future__ import annotations

import pytest

from adt_listener.hl7.er7 import DEFAULT_DELIMITERS, Delimiters, Er7Error, Message, read_delimiters

MSH = "MSH|^~\\&|HIS|WARD|TC|TC|20240101120000||ADT^A01^ADT_A01|MSG0001|P|2.5"
ADT = "\r".join(
    [
        MSH,
        "EVN|A01|20240101120000",
        'PID|1||123^^^HOSP^MR~456^^^NHS^NH||Doe&Van^John^""||19700101|M',
        "NK1|1|Doe^Jane|SPO",
        "NK1|2|Doe^Jim|SON",
        "PV1|1|I|W1^101^1||||0042^Who^Doctor||||||||||||V001",
    ]
)


def msg(*segments: str, sep: str = "\r") -> Message:
    return Message(sep.join(segments))


# -- delimiters (MSH-1, MSH-2) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("MSH|^~\\&|A", DEFAULT_DELIMITERS),
        ("MSH^~|\\&^A", Delimiters("^", "~", "|", "\\", "&")),
        ("MSH#!@%*#A", Delimiters("#", "!", "@", "%", "*")),
        ("MSH|^~\\&#|A", Delimiters("|", "^", "~", "\\", "&", "#")),
    ],
    ids=["default", "custom-hat-separator", "all-custom", "with-truncation"],
)
def test_read_delimiters(header: str, expected: Delimiters) -> None:
    assert read_delimiters(header) == expected
    assert Message(header).delimiters == expected
    assert expected.encoding_characters == header[4 : 4 + len(expected.encoding_characters)]


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("PID|1||123", None),
        ("", None),
        ("MSH|^~", None),  # too short to hold MSH-2
        (" MSH|^~\\&|A", None),
        ("MSHA^~\\&A|B", 1),
        ("MSH ^~\\&  A", 1),
        ("MSH||A|B|C", 2),  # empty MSH-2
        ("MSH|^~\\|A|B", 2),  # short MSH-2
        ("MSH|^~\\&#!|A", 2),  # long MSH-2
        ("MSH|^^\\&|A|B", 2),  # repeated MSH-2 character
        ("MSH|^~A&|B|C", 2),  # alphanumeric encoding character
        ("MSH|^~\\&\rPID|1", 2),  # MSH-2 not followed by a field
        ("MSH|^~\\&", 2),
    ],
    ids=[
        "no-msh", "empty", "short-text", "leading-space", "alnum-separator", "space-separator",
        "empty-msh2", "short-msh2", "long-msh2", "repeated-msh2", "alnum-msh2",
        "msh2-then-segment-break", "msh2-only",
    ],
)
def test_unreadable_header_raises(text: str, field: int | None) -> None:
    with pytest.raises(Er7Error) as caught:
        Message(text)
    assert caught.value.segment == "MSH"
    assert caught.value.field == field
    assert caught.value.reason == str(caught.value)


@pytest.mark.parametrize(
    ("bad", "segment"),
    # The location names a segment only when it looks like one (no message text leaks out).
    [("PIDX|1", "PID"), ("pid|1", "?"), ("P1|x", "?"), ("|1|2", "?"), ("1PI|x", "?"),
     ("Jane said|x", "?")],
)
def test_bad_segment_name_raises(bad: str, segment: str) -> None:
    with pytest.raises(Er7Error) as caught:
        msg(MSH, "EVN|A01", bad)
    assert caught.value.segment == segment
    assert caught.value.field is None
    assert "segment 3" in caught.value.reason


# -- MSH field numbering -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "component", "expected"),
    [
        (1, 1, "|"),  # MSH-1 is the field separator itself
        (2, 1, "^~\\&"),  # MSH-2 encoding characters, not split on '^'
        (3, 1, "HIS"),
        (7, 1, "20240101120000"),
        (8, 1, ""),
        (9, 1, "ADT"),  # MSH-9.1 message code
        (9, 2, "A01"),  # MSH-9.2 trigger event
        (9, 3, "ADT_A01"),  # MSH-9.3 message structure
        (10, 1, "MSG0001"),  # MSH-10 control id
        (12, 1, "2.5"),  # MSH-12 version id
        (18, 1, ""),
    ],
)
def test_msh_field_numbering(number: int, component: int, expected: str) -> None:
    m = Message(ADT)
    assert m.get("MSH", number, component) == expected
    assert m.raw("MSH", number, component) == expected


def test_msh_whole_fields() -> None:
    m = Message(ADT)
    assert m.field("MSH", 1) == "|"
    assert m.field("MSH", 2) == "^~\\&"
    assert m.field("MSH", 9) == "ADT^A01^ADT_A01"
    assert m.repetitions("MSH", 2) == ["^~\\&"]


def test_msh2_with_truncation_character() -> None:
    m = Message("MSH|^~\\&#|A|B\rPID|1")
    assert m.get("MSH", 2) == "^~\\&#"
    assert m.get("MSH", 3) == "A"


# -- segment separators -----------------------------------------------------------------


@pytest.mark.parametrize(
    "sep", ["\r", "\n", "\r\n", "\r\r", "\n\n"], ids=["CR", "LF", "CRLF", "CRCR", "LFLF"]
)
def test_segment_separators(sep: str) -> None:
    m = Message(ADT.replace("\r", sep) + sep)
    assert [s[0] for s in m.segments] == ["MSH", "EVN", "PID", "NK1", "NK1", "PV1"]
    assert m.get("PV1", 19) == "V001"


def test_mixed_segment_separators_and_bom() -> None:
    m = msg("\ufeff" + MSH, "EVN|A01", "PID|1", "PV1|1", sep="\r")
    m2 = Message(f"{MSH}\r\nEVN|A01\nPID|1\rPV1|1\r\n")
    assert [s[0] for s in m.segments] == [s[0] for s in m2.segments]
    assert m.segments == m2.segments


# -- fields, repetitions, components, subcomponents ---------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "expected"),
    [
        (("PID", 3), {}, "123"),
        (("PID", 3, 4), {}, "HOSP"),
        (("PID", 3, 5), {"rep": 0}, "MR"),
        (("PID", 3, 1), {"rep": 1}, "456"),
        (("PID", 3, 5), {"rep": 1}, "NH"),
        (("PID", 3), {"rep": 2}, ""),  # no third repetition
        (("PID", 5, 1, 1), {}, "Doe"),  # PID-5.1.1 surname
        (("PID", 5, 1, 2), {}, "Van"),  # PID-5.1.2 own surname prefix
        (("PID", 5, 1, 3), {}, ""),
        (("PID", 5, 2), {}, "John"),
        (("PID", 5, 2, 2), {}, ""),  # no subcomponent 2
        (("PID", 5, 3), {}, ""),  # explicit null '""' -> ''
        (("PID", 5, 9), {}, ""),  # missing component
        (("PID", 7), {}, "19700101"),
        (("PID", 30), {}, ""),  # missing field
        (("PID", 2), {}, ""),  # empty field
        (("PV1", 7, 2), {}, "Who"),
        (("OBX", 5), {}, ""),  # missing segment
    ],
)
def test_get(args: tuple[object, ...], kwargs: dict[str, int], expected: str) -> None:
    assert Message(ADT).get(*args, **kwargs) == expected  # type: ignore[arg-type]


def test_repetitions_and_raw_fields() -> None:
    m = Message(ADT)
    assert m.repetitions("PID", 3) == ["123^^^HOSP^MR", "456^^^NHS^NH"]
    assert m.repetitions("PID", 2) == []
    assert m.repetitions("ZZZ", 1) == []
    assert m.field("PID", 5) == 'Doe&Van^John^""'
    assert m.raw("PID", 5, 3) == '""'  # raw keeps the explicit null


def test_segment_occurrences() -> None:
    m = Message(ADT)
    assert m.count("NK1") == 2
    assert m.count("OBX") == 0
    assert m.has("PV1") and not m.has("OBX")
    assert m.get("NK1", 2, 2) == "Jane"
    assert m.get("NK1", 2, 2, occurrence=1) == "Jim"
    assert m.get("NK1", 3, occurrence=2) == ""
    assert m.segment("NK1", 1) == ["NK1", "2", "Doe^Jim", "SON"]
    assert m.segment("NK1", 2) is None
    assert m.segment("OBX") is None
    assert [s[1] for s in m.all("NK1")] == ["1", "2"]


# -- escapes: decoded by .get, raw by .raw -------------------------------------------------


@pytest.mark.parametrize(
    ("header", "value", "raw", "decoded"),
    [
        (MSH, "O\\T\\Brien\\F\\x", "O\\T\\Brien\\F\\x", "O&Brien|x"),
        (MSH, "a\\S\\b\\R\\c\\E\\d", "a\\S\\b\\R\\c\\E\\d", "a^b~c\\d"),
        (MSH, "line1\\.br\\line2", "line1\\.br\\line2", "line1\nline2"),
        ("MSH#!@%*#A", "50%F%%S%x", "50%F%%S%x", "50#!x"),
    ],
    ids=["default-F-T", "default-S-R-E", "line-break", "custom-escape"],
)
def test_escapes_decoded_by_get_and_raw_by_raw(
    header: str, value: str, raw: str, decoded: str
) -> None:
    sep = header[3]
    m = msg(header, f"NTE{sep}1{sep}{sep}{value}")
    assert m.raw("NTE", 3) == raw
    assert m.get("NTE", 3) == decoded


def test_custom_delimiters_split_fields() -> None:
    m = msg("MSH^~|\\&^A^B^C^D^^^ADT~A01^X9", "PID^1^^12~~~H|34~~~K")
    assert m.get("MSH", 3) == "A"
    assert m.get("MSH", 9, 2) == "A01"
    assert m.get("MSH", 10) == "X9"
    assert m.get("PID", 3, 4) == "H"
    assert m.get("PID", 3, 1, rep=1) == "34"
